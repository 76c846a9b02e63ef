"""Chunked backward passes: exact gradients, and each chunk only touches its own rows."""

import torch

from inputiba.bottleneck import backward_in_chunks


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
    assert all(t.is_leaf and t.grad is not None and t.grad.shape == t.shape for t in seen)
