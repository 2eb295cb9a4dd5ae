"""Where the party mesh puts things (runtime/mesh.py), without several devices: the meshes here
are abstract (axis names and sizes only). The runs on real host devices are in
tests/e2e/test_mesh.py."""
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from pcformer.runtime import mesh as M

PARTY_ONLY = AbstractMesh((2,), (M.PARTY,))
PARTY_MODEL = AbstractMesh((2, 2), (M.PARTY, M.MODEL))
PARTY_BATCH_MODEL = AbstractMesh((2, 3, 4), (M.PARTY, M.BATCH, M.MODEL))


@pytest.mark.parametrize("shape, n, lead, want", [
    ((384, 1536), 2, 0, 1),        # the largest dim the axis divides
    ((1536, 384), 4, 0, 0),
    ((6, 6), 2, 0, 1),             # equals: the last one
    ((3, 5), 2, 0, None),          # none divisible: stays whole
    ((2, 8, 3), 2, 1, 1),          # the lead (party) dim is never split
    ((1, 1), 2, 0, None),          # smaller than the axis
])
def test_model_dim_picks_the_largest_divisible_dim_past_the_lead(shape, n, lead, want):
    assert M.model_dim(shape, n, lead) == want


def test_the_server_weight_block_splits_over_model_only_on_a_model_mesh():
    assert M.model_spec(PARTY_MODEL, (2, 384, 1536)) == PartitionSpec(M.PARTY, None, M.MODEL)
    assert M.model_spec(PARTY_ONLY, (2, 384, 1536)) is None
    # vectors (biases, LayerNorm scales) stay whole on every device of the party
    assert M.model_spec(PARTY_MODEL, (2, 1536)) is None
    # a batch run's [2, B, ...] blocks keep party and batch in front
    assert M.model_spec(PARTY_BATCH_MODEL, (2, 3, 384, 1536), lead=2) == \
        PartitionSpec(M.PARTY, M.BATCH, None, M.MODEL)


def test_a_mesh_larger_than_the_devices_says_how_many_it_needs():
    with pytest.raises(ValueError, match=r"batch=2, model=4 needs 16 devices.*device_count=16"):
        M.party_mesh(devices=[object()] * 3, batch=2, model=4)
