"""A command checkpoint carries its curve: sealed before upload, cut off after download."""

from __future__ import annotations

from pathlib import Path

from vitcube.workers.executors.sealed import seal, unseal


def test_the_script_gets_its_bytes_back_and_the_executor_the_curve(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    original = bytes(range(256)) * 40
    path.write_bytes(original)
    curve = [{"epoch": 1, "val_map": 0.25}, {"epoch": 2, "val_map": 0.31, "train_loss": 1.5}]
    seal(path, curve)
    assert path.read_bytes() != original
    assert unseal(path) == curve
    assert path.read_bytes() == original


def test_a_file_without_a_curve_is_left_whole(tmp_path: Path) -> None:
    for content in (b"", b"x", b"epoch=3\nval_error=0.2\n" * 10):
        path = tmp_path / "plain"
        path.write_bytes(content)
        assert unseal(path) == []
        assert path.read_bytes() == content
