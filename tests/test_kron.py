import numpy as np
import pytest

from probsparse._kron import kron_matvec, mode_products


@pytest.mark.parametrize("shapes", [[(3, 4), (2, 5)], [(2, 3), (4, 2), (3, 3)], [(1, 2), (2, 1), (2, 2), (3, 2)]])
@pytest.mark.parametrize("complex_data", [False, True])
def test_kron_matvec_equals_dense_kronecker_product(shapes, complex_data, rng):
    mats = [rng.standard_normal(s) + (1j * rng.standard_normal(s) if complex_data else 0) for s in shapes]
    x = rng.standard_normal(int(np.prod([s[1] for s in shapes])))
    H = mats[0]
    for A in mats[1:]:
        H = np.kron(H, A)
    assert np.allclose(kron_matvec(mats, x), H @ x, rtol=1e-12, atol=1e-12)
    assert mode_products(mats, x.reshape([s[1] for s in shapes])).shape == tuple(s[0] for s in shapes)
