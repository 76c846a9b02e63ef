"""``inputiba train-text``: trains the packaged LSTM offline and saves a loadable checkpoint."""

from __future__ import annotations

import pytest

from inputiba.cli import main
from inputiba.models.text_training import load_text_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_text_writes_a_checkpoint_that_loads_and_classifies(tmp_path, capsys):
    out = tmp_path / "lstm.pt"
    assert main(["train-text", "lstm", "--epochs", "1", "--out", str(out)]) == 0
    acc = float(capsys.readouterr().out.split("test_accuracy")[1])
    assert acc > 0.6  # one epoch on the snippets is well above chance
    tm = load_text_model(str(out))
    labels, probs = tm.predict(["A gorgeous, witty, heartfelt film.", "Dull, lifeless and boring."])
    assert labels.tolist() == [1, 0] and (probs > 0.5).all()
