"""from_pretrained shows a progress bar only where loading takes long enough to watch."""

from __future__ import annotations


def test_loading_the_bundled_model_shows_no_progress_bar(capfd):
    import minicohere

    minicohere.from_pretrained(minicohere.bundled_path("tiny-command-r"))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_many_shards_of_a_big_checkpoint_get_a_progress_bar(capfd, monkeypatch, saved_reference):
    import minicohere
    import minicohere.checkpoint

    _, folder = saved_reference()  # 40 KB shards
    capfd.readouterr()  # transformers' own bar while saving
    assert len(list(folder.glob("*.safetensors"))) > 1
    minicohere.from_pretrained(folder)
    assert capfd.readouterr().err == ""  # small: no bar
    monkeypatch.setattr(minicohere.checkpoint, "PROGRESS_MIN_BYTES", 0)
    minicohere.from_pretrained(folder)
    assert "loading shards" in capfd.readouterr().err
