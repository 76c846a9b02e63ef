"""Chunked backward passes: exact gradients, and each chunk only touches its own rows."""

import torch

from inputiba.core.bottleneck import backward_in_chunks


def test_backward_in_chunks_matches_one_pass_and_gives_each_chunk_its_own_leaf():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    a = torch.randn(10, 5)
    lin = torch.nn.Linear(3, 2)
    seen = []

    def fn(inp, rows):
        seen.append(inp)
        return torch.tanh(lin(inp)) * (rows.start + 1)

    inputs = a @ w
    per_row = backward_in_chunks(fn, inputs, 4, loss=lambda out, _rows: out.pow(2).sum(1))
    grad_chunked = w.grad.clone()
    w.grad = None
    ref = (torch.tanh(lin(a @ w)) * torch.tensor([1.0] * 4 + [5.0] * 4 + [9.0] * 2)[:, None])
    ref.pow(2).sum(1).sum().backward()
    torch.testing.assert_close(grad_chunked, w.grad)
    torch.testing.assert_close(per_row, ref.pow(2).sum(1).detach())
    assert [t.shape[0] for t in seen] == [4, 4, 2]
    # regression: chunks used to be views of one whole-batch leaf, so every chunk's backward
    # wrote and summed a zero-filled gradient of the whole batch (quadratic in the batch size)
    leaves = [t.grad_fn.next_functions[0][0].variable for t in seen]  # fn gets a leaf's copy
    assert all(v.is_leaf and v.grad is not None and v.grad.shape == t.shape
               for v, t in zip(leaves, seen, strict=True))


def test_chunks_may_be_modified_in_place_by_the_network():
    """Regression: VGG16 failed in stage 1, whose tail starts with ReLU(inplace=True)."""
    torch.manual_seed(0)
    a = torch.randn(6, 5)
    w = torch.randn(5, 3, requires_grad=True)
    backward_in_chunks(lambda inp, _rows: torch.relu_(inp) * 2, a @ w, 4,
                       loss=lambda out, _rows: out.sum(1))
    chunked, w.grad = w.grad.clone(), None
    (torch.relu(a @ w) * 2).sum().backward()
    torch.testing.assert_close(chunked, w.grad)
