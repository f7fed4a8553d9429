"""Token-level loss adapters, record()'s valid mask, and datasets of dict items (CPU, fast)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import dataprune as dp


def lm_batch(seed: int = 0, batch: int = 4, length: int = 6, vocab: int = 11):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=gen)
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    return logits, labels


def test_sequence_mean_matches_cross_entropy_per_sequence_with_padding_and_ignored_labels():
    logits, labels = lm_batch()
    labels[0, 4:] = -100  # ignored labels
    mask = torch.ones_like(labels)
    mask[1, 2:] = 0  # padding whose labels are not -100
    losses, valid = dp.sequence_losses(logits, labels, attention_mask=mask)
    for row, counted in [(0, slice(0, 4)), (1, slice(0, 2)), (2, slice(None)), (3, slice(None))]:
        expected = F.cross_entropy(logits[row, counted], labels[row, counted])
        torch.testing.assert_close(losses[row], expected)
    assert valid.all()
    summed, _ = dp.sequence_losses(logits, labels, attention_mask=mask, reduction="sum")
    torch.testing.assert_close(summed[1], F.cross_entropy(logits[1, :2], labels[1, :2]) * 2)


def test_causal_shift_matches_a_hugging_face_style_shifted_loss():
    logits, labels = lm_batch(seed=1)
    losses, valid = dp.sequence_losses(logits, labels, causal=True)
    expected = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none"
    ).mean(dim=1)
    torch.testing.assert_close(losses, expected)
    assert valid.all()


def test_a_sequence_with_every_token_ignored_gives_no_loss_no_update_and_no_nan():
    logits, labels = lm_batch(seed=2)
    labels[1] = -100
    mask = torch.ones_like(labels)
    mask[2] = 0
    logits.requires_grad_(True)
    losses, valid = dp.sequence_losses(logits, labels, attention_mask=mask)
    assert valid.tolist() == [True, False, False, True]
    assert losses[1] == 0 and losses[2] == 0 and torch.isfinite(losses).all()

    pruner = dp.Pruner(10, "ucb", prune=0.5, epochs=3)
    pruner.set_epoch(0)
    index = torch.tensor([3, 4, 5, 6])
    loss = pruner.record(index, losses, valid)
    torch.testing.assert_close(loss, losses[[0, 3]].mean())
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1].abs().sum() == 0
    seen = pruner.stats.seen
    assert seen[[3, 6]].all() and not seen[[4, 5]].any()
    assert pruner.summary()["nonfinite_losses_skipped"] == 0


def test_valid_mask_is_checked():
    pruner = dp.Pruner(10, "ucb", prune=0.5, epochs=3)
    pruner.set_epoch(0)
    index, losses = torch.tensor([1, 2]), torch.ones(2)
    with pytest.raises(TypeError, match="valid must be a bool tensor"):
        pruner.record(index, losses, torch.ones(2))
    with pytest.raises(ValueError, match=r"valid must have the shape of losses, \(2,\)"):
        pruner.record(index, losses, torch.ones(3, dtype=torch.bool))


def test_adapter_errors_name_the_shapes_and_the_reduction():
    logits, labels = lm_batch()
    with pytest.raises(ValueError, match="logits must be"):
        dp.sequence_losses(logits[0], labels)
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        dp.sequence_losses(logits, labels, attention_mask=labels[:, :2])
    with pytest.raises(ValueError, match="reduction='max' is not one of"):
        dp.sequence_losses(logits, labels, reduction="max")


class Texts(torch.utils.data.Dataset):
    """Dict items of varying length, as a tokenised text dataset gives them."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return {"input_ids": list(range(i + 1))}


def pad_collate(items):
    """A collator that, like Hugging Face's, rejects keys it does not know."""
    assert all(set(item) == {"input_ids"} for item in items)
    width = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), width), -100)
    for row, item in enumerate(items):
        ids[row, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
    return {"input_ids": ids}


def test_dict_items_keep_their_indices_through_any_collator():
    pruner = dp.Pruner(7, "random", prune=0.5, epochs=2)
    pruner.set_epoch(0)
    loader = DataLoader(
        dp.IndexedDictDataset(Texts()),
        batch_size=3,
        sampler=pruner.sampler(),
        collate_fn=dp.IndexedCollator(pad_collate),
    )
    seen = []
    for batch in loader:
        assert batch["index"].dtype == torch.int64
        lengths = (batch["input_ids"] != -100).sum(dim=1)
        assert (lengths == batch["index"] + 1).all()  # each row is its own item
        seen += batch["index"].tolist()
    assert sorted(seen) == pruner.indices().tolist()
    plain = DataLoader(dp.IndexedDictDataset(Texts()), collate_fn=dp.IndexedCollator())
    default = next(iter(plain))
    assert default["index"].tolist() == [0]


def test_dict_dataset_errors_say_what_to_use_instead():
    with pytest.raises(TypeError, match="use IndexedDataset"):
        dp.IndexedDictDataset([(1, 2)])[0]
    with pytest.raises(ValueError, match="already has a key 'index'"):
        dp.IndexedDictDataset([{"index": 3}])[0]


def test_a_batch_mixing_items_with_and_without_an_index_is_refused():
    collate = dp.IndexedCollator()
    with pytest.raises(ValueError, match="1 of the 2 items of a batch have no 'index' key"):
        collate([{"x": torch.zeros(1), "index": 0}, {"x": torch.zeros(1)}])
    assert collate([{"x": torch.zeros(1)}])["x"].shape == (1, 1)  # none has one: kept as is
