"""notebooks/previous_chapters.py: the course's own pieces add up to a Command-R equal to the references."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import FAMILY, REPO, reference_model, rel_err, tiny_kwargs

sys.path.insert(0, str(REPO / "notebooks"))
import previous_chapters as pc  # noqa: E402

import minicohere  # noqa: E402


def course_model(reference):
    """The module's model built from a transformers model's config, holding its state dict."""
    model = pc.MyCohereForCausalLM(reference.config).eval()
    missing, unexpected = model.load_state_dict(reference.state_dict(), strict=False)
    if missing or unexpected:
        raise AssertionError(f"parameter names differ: missing {missing}, unexpected {unexpected}")
    return model


@pytest.mark.parametrize("family", list(FAMILY))
def test_course_model_equals_transformers_on_each_family_config(family):
    reference = reference_model(family, seed=3)
    model = course_model(reference)
    ids = torch.randint(0, reference.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :3] = -100
    with torch.no_grad():
        theirs = reference(ids, labels=labels)
        ours = model(ids, labels=labels)
    assert ours.logits.shape == theirs.logits.shape
    assert rel_err(ours.logits, theirs.logits) < 1e-5
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5


def test_course_model_takes_the_names_of_minicohere_state_dict(tmp_path):
    reference = reference_model("plus-qknorm", seed=4)
    reference.save_pretrained(tmp_path)
    ours = minicohere.from_pretrained(tmp_path, progress=False).eval()
    model = pc.MyCohereForCausalLM(ours.config).eval()
    model.load_state_dict(ours.state_dict())
    ids = torch.randint(0, ours.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert rel_err(model(ids).logits, ours(ids).logits) < 1e-5


def test_course_model_loads_the_bundled_model_and_gives_minicohere_logits():
    folder = minicohere.bundled_path("tiny-command-r")
    reference = minicohere.from_pretrained(folder, progress=False).eval()
    model = pc.MyCohereForCausalLM(reference.config).eval()
    model.load_state_dict(reference.state_dict())
    ids = torch.randint(0, reference.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(ids, labels=ids), reference(ids, labels=ids)
    assert rel_err(ours.logits, theirs.logits) < 1e-5
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5


def test_padding_hides_the_padded_keys_as_transformers_does():
    reference = reference_model("08-2024-gqa", seed=5)
    model = course_model(reference)
    ids = torch.randint(1, reference.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(3))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 5:] = 0                                    # right padding: real tokens never see it
    with torch.no_grad():
        ours = model(ids, attention_mask=attention_mask).logits
        theirs = reference(ids, attention_mask=attention_mask).logits
        alone = model(ids[1:, :5]).logits
    assert rel_err(ours[1, :5], theirs[1, :5]) < 1e-5
    assert rel_err(ours[1, :5], alone[0]) < 1e-5


def test_left_padded_batch_with_position_ids_matches_transformers():
    reference = reference_model("08-2024-gqa", seed=5)
    model = course_model(reference)
    ids = torch.randint(1, reference.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(4))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :3] = 0                                    # left padding: positions must skip it
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(ids, attention_mask=attention_mask, position_ids=position_ids).logits
        theirs = reference(ids, attention_mask=attention_mask, position_ids=position_ids).logits
        alone = model(ids[1:, 3:]).logits
    real = attention_mask.bool()
    assert rel_err(ours[real], theirs[real]) < 1e-5
    assert rel_err(ours[1, 3:], alone[0]) < 1e-5


def test_cache_is_refused_until_chapter_08_with_a_clear_error():
    model = pc.MyCohereForCausalLM(reference_model("mqa").config)
    with pytest.raises(ValueError, match="chapter 08"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=object())


def test_module_does_not_import_minicohere():
    source = (REPO / "notebooks" / "previous_chapters.py").read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.lstrip().startswith(("import ", "from "))]
    assert not [line for line in imports if "minicohere" in line], "previous_chapters.py must run without minicohere"
    assert "# ---- chapters 08 and later add below this line ----" in source
