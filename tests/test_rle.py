import numpy as np

from tapkit.utils.rle import decode_rle, encode_rle


def _uncompressed_counts(mask):
    """Independent COCO RLE: run lengths over the column-major flattening, starting with zeros."""
    flat = mask.T.reshape(-1).astype(int)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


def test_rle_round_trip_and_agreement_with_independent_encoder():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (40, 33)]:
        for density in (0.0, 0.3, 1.0):
            mask = rng.random(shape) < density
            rle = encode_rle(mask)
            assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
            assert np.array_equal(decode_rle(rle), mask)
            plain = {"size": list(shape), "counts": _uncompressed_counts(mask)}
            assert np.array_equal(decode_rle(plain), mask)
