"""Token -> rank segmentation against hand-worked ids and a slow decode-prefix reference."""
import pytest
import torch

from rank_grpo_plugin import newline_counts, num_emitted_items, rank_ids, split_ranks

# Hand vocabulary: id -> text
VOCAB = {0: "<pad>", 1: "A", 2: "\n", 3: ")\n", 4: "\n\n", 5: "B", 6: "<eos>", 7: " (1999"}
TABLE = torch.tensor([VOCAB[i].count("\n") for i in range(len(VOCAB))])


def test_hand_example_merged_and_double_newlines():
    # "A (1999)\nB\n\nA" + eos, right padded
    ids = torch.tensor([[1, 7, 3, 5, 4, 1, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0, 0]])
    got = rank_ids(ids, mask, TABLE)
    # ")\n" ends item 0; "\n\n" ends item 1 and leaves rank 2 empty; "A" is rank 3
    assert got.tolist() == [[0, 0, 0, 1, 1, 3, 3, -1, -1]]
    assert got.dtype == torch.long


def test_left_padding_and_masked_garbage_ids_are_ignored():
    ids = torch.tensor([[999, 999, 1, 2, 5, 2], [1, 2, 2, 2, 2, 1]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    got = rank_ids(ids, mask, TABLE)
    assert got.tolist() == [[-1, -1, 0, 0, 1, 1], [0, 0, 1, 2, 3, 4]]


def test_degenerate_inputs():
    empty = rank_ids(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0), TABLE)
    assert empty.shape == (2, 0)
    all_masked = rank_ids(torch.tensor([[1, 2]]), torch.tensor([[0, 0]]), TABLE)
    assert all_masked.tolist() == [[-1, -1]]
    no_newline = rank_ids(torch.tensor([[1, 5, 1, 6]]), torch.ones(1, 4), TABLE)
    assert no_newline.tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="outside the newline table"):
        rank_ids(torch.tensor([[1, 8]]), torch.ones(1, 2), TABLE)
    with pytest.raises(ValueError, match="shape"):
        rank_ids(torch.tensor([[1, 2]]), torch.ones(1, 3), TABLE)


def test_overflow_ranks_past_k():
    k = 20
    ids = torch.tensor([[1, 2] * (k + 3) + [6]])  # K+3 lines, then EOS
    got = rank_ids(ids, torch.ones_like(ids), TABLE)[0]
    assert got[: 2 * k].max().item() == k - 1
    assert (got[2 * k :] >= k).all()
    assert got[-1].item() == k + 3


def test_num_emitted_items_counts_lines_not_trailing_newline():
    def items(tokens):
        ids = torch.tensor([tokens])
        m = torch.ones_like(ids)
        eos = (ids == 6).long()
        return num_emitted_items(rank_ids(ids, m, TABLE), m, eos).item()

    assert items([1, 2, 5, 6]) == 2  # "A\nB" eos
    assert items([1, 2, 5, 2, 6]) == 2  # trailing newline is not an item
    assert items([1, 2, 5, 4, 6]) == 3  # "A\nB\n\n": a blank third line
    assert items([6]) == 0
    assert items([1, 2, 5]) == -1  # truncated: no EOS


def test_newline_counts_real_tokenizer_has_merged_tokens_and_is_cached(bpe_tokenizer):
    table = newline_counts(bpe_tokenizer)
    assert table.shape == (len(bpe_tokenizer),) and table.dtype == torch.long
    vocab = bpe_tokenizer.convert_ids_to_tokens(list(range(len(bpe_tokenizer))))
    texts = [bpe_tokenizer.convert_tokens_to_string([t]) for t in vocab]
    merged = [i for i, t in enumerate(texts) if "\n" in t and t.strip("\n")]
    doubles = [i for i, t in enumerate(texts) if t.count("\n") >= 2]
    assert merged and doubles, "the fixture tokenizer should contain ')\\n'-like and '\\n\\n' tokens"
    assert all(table[i] == texts[i].count("\n") for i in range(len(texts)))
    assert newline_counts(bpe_tokenizer) is table  # computed once per tokenizer
    padded = newline_counts(bpe_tokenizer, vocab_size=len(bpe_tokenizer) + 5)
    assert padded.shape == (len(bpe_tokenizer) + 5,) and padded[-5:].sum() == 0
    with pytest.raises(ValueError):
        newline_counts(bpe_tokenizer, vocab_size=3)


class _CountingTokenizer:
    """Minimal tokenizers.Tokenizer-like object that counts how often its size is asked for."""

    def __init__(self, vocab):
        self.vocab, self.size_calls = vocab, 0

    def get_vocab_size(self, with_added_tokens=True):
        self.size_calls += 1
        return len(self.vocab)

    def decode_batch(self, batch, skip_special_tokens=False):
        return ["".join(self.vocab[i] for i in ids) for ids in batch]


def test_newline_counts_cached_per_size_and_device_without_asking_the_tokenizer_again():
    tok = _CountingTokenizer(["a", "\n", ")\n", "\n\n", "b"])
    table = newline_counts(tok)
    assert table.tolist() == [0, 1, 1, 2, 0] and tok.size_calls == 1
    for _ in range(3):  # the hot path (every experience / loss micro-batch): a dictionary lookup
        assert newline_counts(tok) is table and newline_counts(tok, device="cpu") is table
    padded = newline_counts(tok, vocab_size=8)
    assert padded.tolist() == [0, 1, 1, 2, 0, 0, 0, 0] and newline_counts(tok, vocab_size=8) is padded
    assert tok.size_calls == 1
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        newline_counts(tok, vocab_size=4)


def test_tokenizer_rank_ids_widens_the_table_for_ids_past_the_tokenizer():
    from rank_grpo_plugin.ranks import tokenizer_rank_ids

    tok = _CountingTokenizer(["a", "\n", ")\n", "\n\n", "b"])  # ids 0-4; a padded embedding may emit 5..300
    ids = torch.tensor([[-7, 0, 2, 300, 1, 3, 0], [3, 3, 0, 0, 0, 0, 0]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]])  # the -7 is masked garbage
    got = tokenizer_rank_ids(ids, mask, tok)
    # hand: row 0 newlines 0,1,0 (300: past the tokenizer),1,2,0 -> before: 0,0,1,1,2,4; row 1: 2,2,0 -> 0,2,4
    assert got.tolist() == [[-1, 0, 0, 1, 1, 2, 4], [0, 2, 4, -1, -1, -1, -1]]
    assert got.tolist() == rank_ids(ids, mask, newline_counts(tok, vocab_size=384)).tolist()
    assert newline_counts(tok, vocab_size=384).numel() == 384 and tok.size_calls == 1  # widened in steps of 128
    assert tokenizer_rank_ids(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0), tok).shape == (1, 0)
    with pytest.raises(ValueError, match="negative"):
        tokenizer_rank_ids(torch.tensor([[1, -2]]), torch.ones(1, 2), tok)
    with pytest.raises(ValueError, match="shape"):
        tokenizer_rank_ids(torch.tensor([[1, 2]]), torch.ones(1, 3), tok)


def _slow_rank_ids(tokenizer, ids):
    """Reference: decode the prefix before each token and count its newlines (what a decode loop does)."""
    return [tokenizer.decode(ids[:t]).count("\n") for t in range(len(ids))]


@pytest.mark.parametrize(
    "text",
    [
        "A Mighty Wind (2003)\nThis Is Spinal Tap (1984)\nZelig (1983)",
        "Zelig (1983)\n",  # trailing newline
        "Zelig (1983)\n\nCB4 (1993)\n\n\n",  # blank lines
        "Here are my picks:\n1. \"Zelig\" (1983)\n2) **CB4 (1993)**",
        "",
        "no newline at all",
    ],
)
def test_real_tokenizer_matches_decode_reference_and_line_split(bpe_tokenizer, text):
    table = newline_counts(bpe_tokenizer)
    ids = bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
    t = torch.tensor([ids + [0] * 3], dtype=torch.long)
    m = torch.tensor([[1] * len(ids) + [0] * 3])
    got = rank_ids(t, m, table)[0]
    assert got[: len(ids)].tolist() == _slow_rank_ids(bpe_tokenizer, ids)
    # The tokens of rank k decode to line k of the text plus the newline(s) that end it.
    lines = split_ranks(text)
    for k, line in enumerate(lines):
        toks = [i for i, r in zip(ids, got.tolist()) if r == k]
        piece = bpe_tokenizer.decode(toks)
        assert piece.rstrip("\n") == line
        assert piece == "" or piece.startswith(line)


def test_real_sample_completions_segment_like_the_reward(bpe_tokenizer, reddit_rows):
    table = newline_counts(bpe_tokenizer)
    texts = [r["completion"][0]["content"] for r in reddit_rows[:16]]
    enc = bpe_tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    got = rank_ids(enc["input_ids"], enc["attention_mask"], table)
    for row, text in enumerate(texts):
        n_lines = len(split_ranks(text))
        assert got[row].max().item() == n_lines - 1 == 19


def test_tokenizer_segmentations_match_rank_ids_in_each_mode():
    from rank_grpo_plugin.ranks import tokenizer_segmentations

    tok = _CountingTokenizer(["a", "\n", ")\n", "\n\n", "b"])
    ids = torch.tensor([[0, 2, 4, 3, 0, 1], [3, 0, 1, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    end, start = tokenizer_segmentations(ids, mask, tok, ("end", "start"))
    table = newline_counts(tok)
    assert end.tolist() == rank_ids(ids, mask, table).tolist() == [[0, 0, 1, 1, 3, 3], [0, 2, 2, -1, -1, -1]]
    assert start.tolist() == rank_ids(ids, mask, table, "start").tolist() == [[0, 1, 1, 3, 3, 4], [2, 2, 3, -1, -1, -1]]
    with pytest.raises(ValueError, match="separator must be one of"):
        tokenizer_segmentations(ids, mask, tok, ("end", "middle"))
