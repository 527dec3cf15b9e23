"""MeshEncoder: neighbours vs brute force, padding invariance, supernode choice, errors."""

from __future__ import annotations

import pytest
import torch

from torch.profiler import ProfilerActivity, profile

from upt_lightning.models import MeshEncoder
from upt_lightning.models.neighbourhoods import centres_per_chunk, radius_neighbours

TINY = dict(dim=16, depth=1, num_heads=2, latent_tokens=3, latent_dim=5)


def build(num_supernodes=8, radius=0.3, max_neighbours=6, chunk_size=None, coord_dim=2, search_budget_mib=256.0):
    return MeshEncoder(
        {"u": 1, "v": 1}, coord_dim=coord_dim, num_supernodes=num_supernodes, radius=radius,
        max_neighbours=max_neighbours, chunk_size=chunk_size, search_budget_mib=search_budget_mib, **TINY,
    )


def padded_batch(counts, total, coord_dim=2):
    """Random points, valid ones first; padding holds NaN fields and far-away coordinates."""
    coords = torch.rand(len(counts), total, coord_dim)
    fields = torch.randn(len(counts), total, 2)
    mask = torch.arange(total) < torch.tensor(counts).unsqueeze(1)
    coords[~mask] = 5.0
    fields[~mask] = float("nan")
    return fields, coords, mask


# Batch 2 x 40 float32 points: one centre's distance row is 320 bytes.
SEARCH_SETTINGS = {
    "fixed chunk 3": dict(chunk_size=3),
    "default budget, one chunk": dict(),
    "budget of 4 centres": dict(search_budget_mib=4 * 320 / 2**20),
    "budget of 4.9 centres": dict(search_budget_mib=4.9 * 320 / 2**20),
    "tiny budget, chunk 1": dict(search_budget_mib=1e-9),
}


@pytest.mark.parametrize("settings", SEARCH_SETTINGS.values(), ids=SEARCH_SETTINGS.keys())
def test_neighbours_equal_brute_force_with_radius_and_cap(settings):
    encoder = build(num_supernodes=10, radius=0.3, max_neighbours=6, **settings)
    _, coords, mask = padded_batch([40, 25], 40)
    supernodes = encoder.eval().select_supernodes(coords, mask)
    idx, valid = encoder.neighbours(coords, supernodes, mask)
    capped = cut_by_radius = 0
    for b in range(2):
        for s in range(10):
            centre = coords[b, supernodes[b, s]]
            dist = [((coords[b, i] - centre) ** 2).sum().sqrt().item() for i in range(40)]
            inside = sorted((d, i) for i, d in enumerate(dist) if mask[b, i] and d <= 0.3)
            expected = {i for _, i in inside[:6]}
            assert set(idx[b, s][valid[b, s]].tolist()) == expected
            assert supernodes[b, s].item() in expected
            capped += len(inside) > 6
            cut_by_radius += len(inside) < 6
    assert capped and cut_by_radius, "the random batch must exercise both the cap and the radius"


def test_search_budget_changes_neither_neighbours_nor_encoding():
    fields, coords, mask = padded_batch([40, 25], 40)
    results = []
    for settings in SEARCH_SETTINGS.values():
        torch.manual_seed(0)
        encoder = build(num_supernodes=10, **settings).eval()
        supernodes = encoder.select_supernodes(coords, mask)
        results.append((*encoder.neighbours(coords, supernodes, mask), encoder(fields, coords, {"mask": mask})))
    for idx, valid, encoding in results[1:]:
        assert torch.equal(idx, results[0][0]) and torch.equal(valid, results[0][1])
        assert torch.equal(encoding, results[0][2])


def test_chunk_follows_the_budget_not_the_batch_size():
    assert centres_per_chunk(1, 200_000, 4, 256 * 2**20) == 335
    assert centres_per_chunk(16, 200_000, 4, 256 * 2**20) == 20
    assert centres_per_chunk(16, 200_000, 8, 256 * 2**20) == 10  # float64 rows are twice as large
    assert centres_per_chunk(16, 10**7, 4, 256 * 2**20) == 1  # one row is above the budget: chunk 1
    # The largest allocation of a real search (the distance matrix) stays within the budget for
    # every batch size; a fixed chunk of 64 centres grows with it.
    budget = 4 * (4 * 300 * 4)  # four centres' rows at batch 4 (a row: batch x 300 points x 4 bytes)

    def largest_allocation(batch, **settings):
        coords = torch.rand(batch, 300, 2)
        mask = torch.ones(batch, 300, dtype=torch.bool)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            radius_neighbours(coords, coords[:, :64], mask, 0.2, 8, **settings)
        return max(event.cpu_memory_usage for event in prof.events() if "cdist" in event.name)

    for batch in (1, 4, 16):
        assert largest_allocation(batch, budget_bytes=budget) <= budget
    assert largest_allocation(16, chunk_size=64) == 16 * 64 * 300 * 4


def test_bad_search_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="search_budget_mib must be positive"):
        build(search_budget_mib=0)
    with pytest.raises(ValueError, match="chunk_size"):
        build(chunk_size=0)


@pytest.mark.parametrize("coord_dim", [1, 2, 3])
def test_output_shape_for_padded_batch(coord_dim):
    encoder = build(coord_dim=coord_dim).eval()
    fields, coords, mask = padded_batch([30, 17, 24], 30, coord_dim)
    assert encoder({"u": fields[..., :1], "v": fields[..., 1:]}, coords, {"mask": mask}).shape == (3, 3, 5)


@pytest.mark.parametrize("counts", [[50, 50], [50, 12]])
def test_padding_anywhere_does_not_change_the_encoding(counts):
    encoder = build().eval()
    fields, coords, mask = padded_batch(counts, 50)
    alone = encoder(fields[:1, : counts[0]], coords[:1, : counts[0]])
    # Interleave 30 junk points (NaN fields, far coordinates) among the real points of sample 0.
    order = torch.randperm(80)
    real_slots = order.sort().values[:50]
    junk_fields, junk_coords, junk_mask = padded_batch([0, 0], 80)
    junk_fields[0, real_slots], junk_coords[0, real_slots], junk_mask[0, real_slots] = fields[0], coords[0], mask[0]
    junk_fields[1, :50], junk_coords[1, :50], junk_mask[1, :50] = fields[1], coords[1], mask[1]
    padded = encoder(junk_fields, junk_coords, {"mask": junk_mask})
    torch.testing.assert_close(padded[:1], alone, rtol=0, atol=1e-5)
    assert torch.isfinite(padded).all()


def test_encoding_is_invariant_to_point_order_given_the_same_supernodes():
    encoder = build().eval()
    fields, coords, _ = padded_batch([40], 40)
    supernodes = torch.tensor([[0, 3, 7, 11, 20, 25, 31, 39]])
    permutation = torch.randperm(40)
    inverse = torch.argsort(permutation)
    reference = encoder(fields, coords, {"supernode_idx": supernodes})
    permuted = encoder(fields[:, permutation], coords[:, permutation], {"supernode_idx": inverse[supernodes]})
    torch.testing.assert_close(permuted, reference, rtol=0, atol=1e-5)


def test_eval_supernodes_are_deterministic_and_evenly_spaced_among_valid_points():
    encoder = build(num_supernodes=4).eval()
    _, coords, mask = padded_batch([10, 7], 10)
    mask[0, [2, 5]] = False
    first = encoder.select_supernodes(coords, mask)
    assert torch.equal(first, encoder.select_supernodes(coords, mask))
    for b in range(2):
        valid = mask[b].nonzero().flatten().tolist()
        assert first[b].tolist() == [valid[j * len(valid) // 4] for j in range(4)]


def test_train_supernodes_vary_with_the_generator_and_are_distinct_valid_points():
    encoder = build(num_supernodes=5).train()
    _, coords, mask = padded_batch([20, 12], 20)
    draws = [encoder.select_supernodes(coords, mask, torch.Generator().manual_seed(seed)) for seed in range(300)]
    assert torch.equal(draws[0], encoder.select_supernodes(coords, mask, torch.Generator().manual_seed(0)))
    assert not torch.equal(draws[0], draws[1])
    for chosen in draws:
        assert mask.gather(1, chosen).all()
        assert all(len(set(row.tolist())) == 5 for row in chosen)
    # Uniform subsets: each of the 12 valid points of sample 1 is picked with probability 5/12.
    frequency = torch.bincount(torch.stack(draws)[:, 1].flatten(), minlength=20).float() / 300
    assert torch.all((frequency[:12] - 5 / 12).abs() < 0.1)
    assert frequency[12:].sum() == 0


def test_forward_uses_forced_supernodes():
    encoder = build().eval()
    fields, coords, mask = padded_batch([30, 20], 30)
    default = encoder(fields, coords, {"mask": mask})
    chosen = encoder.select_supernodes(coords, mask)
    torch.testing.assert_close(encoder.train()(fields, coords, {"mask": mask, "supernode_idx": chosen}), default)
    with pytest.raises(ValueError, match="points at padding"):
        encoder(fields, coords, {"mask": mask, "supernode_idx": torch.full((2, 8), 25)})


def test_fewer_valid_points_than_supernodes_is_clear_error():
    encoder = build(num_supernodes=16)
    fields, coords, mask = padded_batch([30, 9], 30)
    with pytest.raises(ValueError, match=r"only 9 valid points.*\[30, 9\].*num_supernodes=16; lower num_supernodes"):
        encoder(fields, coords, {"mask": mask})


def test_bad_inputs_are_clear_errors():
    encoder = build()
    fields, coords, mask = padded_batch([20, 20], 20)
    with pytest.raises(ValueError, match=r"coords must have shape \(2, 20, 2\)"):
        encoder(fields, coords[:, :19])
    with pytest.raises(ValueError, match=r"meta\['mask'\] must be a \(2, 20\) bool"):
        encoder(fields, coords, {"mask": mask[:, :10]})
    coords[1, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="coords contains 1 NaN"):
        encoder(fields, coords, {"mask": mask})
