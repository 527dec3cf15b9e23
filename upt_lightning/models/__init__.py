"""Plain ``nn.Module`` models of the UPT pipeline; they know nothing of Lightning.

``UPT`` is the whole surrogate (normaliser, encoder, operator, decoder, refinement, rollouts), loadable from
a stage-2 checkpoint with ``UPT.from_checkpoint`` and callable on tensors without Lightning.

``GridEncoder`` / ``MeshEncoder`` / ``RegionEncoder`` map physical fields to latent tokens ``(B, T, latent_dim)``,
``LatentOperator`` advances the latent by one time step, ``AnyPointDecoder`` evaluates the fields
at any query points.
"""

from upt_lightning.models.any_point_decoder import AnyPointDecoder
from upt_lightning.models.grid_encoder import GridEncoder
from upt_lightning.models.latent_operator import LatentOperator
from upt_lightning.models.memory import saved_tensor_bytes
from upt_lightning.models.mesh_encoder import MeshEncoder
from upt_lightning.models.region_encoder import RegionEncoder
from upt_lightning.models.upt import UPT

__all__ = ["UPT", "AnyPointDecoder", "GridEncoder", "LatentOperator", "MeshEncoder", "RegionEncoder",
           "saved_tensor_bytes"]
