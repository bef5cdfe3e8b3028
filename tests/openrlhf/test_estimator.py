"""rank_grpo inside OpenRLHF's real experience maker and replay buffer (CPU, no Ray)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

K = 5
GROUP = 4


def _label(gt, seen=()):
    return json.dumps({"groundtruth": gt, "seen": list(seen)})


GT_A = [["This Is Spinal Tap", "1984"], ["A Mighty Wind", "2003"], ["Waiting for Guffman", "1996"]]
GT_B = [["The Matrix", "1999"], ["Heat", "1995"]]
FILL = ["Man Bites Dog (1992)", "Drop Dead Gorgeous (1999)", "CB4 (1993)", "Strange Wilderness (2008)",
        "Take the Money and Run (1969)"]

COMPLETIONS = [
    # prompt A: exactly K items / early stop / overflow / garbage
    "A Mighty Wind (2003)\nMan Bites Dog (1992)\nThis Is Spinal Tap (1984)\nCB4 (1993)\nWaiting for Guffman (1996)",
    "Man Bites Dog (1992)\nA Mighty Wind (2003)",
    "\n".join(FILL[:4] + ["This Is Spinal Tap (1984)", "A Mighty Wind (2003)", "extra line"]),
    "Sure! Here are some movies:\n\n1. **Heat** (1995)",
    # prompt B
    "The Matrix (1999)\nHeat (1995)\nCB4 (1993)\nMan Bites Dog (1992)\nDrop Dead Gorgeous (1999)\n",
    "Heat (1995)\nThe Matrix (1999)\nHeat (1995)\nCB4 (1993)\nMan Bites Dog (1992)",
    "CB4 (1993)\nMan Bites Dog (1992)\nDrop Dead Gorgeous (1999)\nStrange Wilderness (2008)\nThe Matrix (1999)",
    "The Matrix (1999)\nHeat (1995)\nCB4 (1993)\nMan Bites Dog (1992)\nStrange Wilderness (2008)",
]
LABELS = [_label(GT_A, ["Best in Show"])] * GROUP + [_label(GT_B)] * GROUP
PROMPTS = ["<|im_start|>user\nrecommend like Best in Show<|im_end|>\n<|im_start|>assistant\n"] * GROUP + \
          ["<|im_start|>user\nrecommend like Ronin<|im_end|>\n<|im_start|>assistant\n"] * GROUP


@pytest.fixture
def args(helpers, catalog_path, monkeypatch, request):
    monkeypatch.delenv("RANK_GRPO_PLUGIN_OPTIONS", raising=False)
    # tests parametrised indirectly: a --rank_grpo.separator value, or a list of extra --rank_grpo.* flags
    param = getattr(request, "param", "end")
    extra = ["--rank_grpo.separator", param] if isinstance(param, str) else list(param)
    return helpers.run_cli(helpers.base_argv + [
        "--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog", catalog_path,
        "--rank_grpo.num_ranks", str(K), "--rollout.n_samples_per_prompt", str(GROUP),
        "--rollout.micro_batch_size", "3", "--algo.kl.init_coef", "0", *extra,
    ])


@pytest.fixture
def rollout(args, tokenizer, helpers):
    from rank_grpo_plugin.options import RankGRPOOptions

    opts = RankGRPOOptions.from_args(args)
    eos = [True] * len(COMPLETIONS)
    eos[6] = False  # a truncated completion (no EOS token)
    return helpers.rollout_experiences(tokenizer, PROMPTS, COMPLETIONS, LABELS, opts, eos=eos), opts


def _maker(args, tokenizer, helpers, kl=0.0):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    return RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=kl), helpers.fake_strategy(args),
                                 tokenizer)


def _prefix_ranks(tokenizer, ids, separator="end"):
    """Independent reference: rank of token t = number of "\\n" in the decoded text of the tokens before it
    (``separator="start"``: of the tokens up to and including it)."""
    upto = 1 if separator == "start" else 0
    return [tokenizer.decode(ids[:t + upto], skip_special_tokens=False).count("\n") for t in range(len(ids))]


def _expected_rank_adv(rollout_samples, opts):
    from rank_grpo_plugin import rank_advantages, rank_rewards
    from rank_grpo_plugin.openrlhf.reward import hit_keys

    hits = torch.tensor([[float(s.info[k][0]) for k in hit_keys(K)] for s in rollout_samples])
    return rank_advantages(rank_rewards(hits, opts.reward_scheme, opts.gamma), GROUP, opts.adv_scale, opts.adv_eps), hits


def _run(maker, rollout_samples):
    samples_list = maker.split_rollout_samples(rollout_samples)  # OpenRLHF: sets index, concatenates micro-batches
    for s in samples_list:
        s.action_log_probs = torch.zeros_like(s.action_mask, dtype=torch.float32)
        s.kl = torch.zeros_like(s.action_mask, dtype=torch.float32)
    return maker.compute_advantages_and_returns(samples_list)


def test_patch_or_registry_in_place(expect_registry):
    import openrlhf.trainer.ppo_utils.experience_maker as em

    from rank_grpo_plugin.openrlhf import register

    status = register.patch_status()
    if expect_registry:
        from openrlhf.utils import extensions

        assert "rank_grpo" in extensions.ADVANTAGE_ESTIMATORS
        assert not getattr(em.RemoteExperienceMaker.compute_advantages_and_returns, "_rank_grpo_patch", False)
    else:
        assert getattr(em.RemoteExperienceMaker.compute_advantages_and_returns, "_rank_grpo_patch", False)
        assert status["openrlhf.trainer.ppo_utils.experience_maker:RemoteExperienceMaker.compute_advantages_and_returns"] == "patched"


@pytest.mark.parametrize("args", ["end", "start"], indirect=True)
def test_real_compute_advantages_places_rank_advantages_on_tokens(args, tokenizer, helpers, rollout):
    """Each token gets the advantage of its rank by the decode reference; with --rank_grpo.separator start the
    newline after item k gets item k+1's (and the one after item K the overflow penalty); EOS shaping unchanged."""
    rollout_samples, opts = rollout
    want_adv, hits = _expected_rank_adv(rollout_samples, opts)
    assert hits.sum() > 0 and (hits.sum(0) < GROUP * 2).all()
    experiences = _run(_maker(args, tokenizer, helpers), rollout_samples)
    checked = moved = 0
    for exp in experiences:
        for row, idx in enumerate(exp.index):
            mask = exp.action_mask[row].bool()
            tokens = exp.sequences[row, -exp.action_mask.shape[1]:][mask].tolist()
            adv = exp.advantages[row][mask]
            ranks = _prefix_ranks(tokenizer, tokens, opts.separator)
            moved += sum(a != b for a, b in zip(ranks, _prefix_ranks(tokenizer, tokens)))
            has_eos = tokens[-1] == tokenizer.eos_token_id
            for t, (tok, r) in enumerate(zip(tokens, ranks)):
                if has_eos and t == len(tokens) - 1:
                    continue
                want = want_adv[idx, r].item() if r < K else opts.overflow_penalty
                assert adv[t].item() == pytest.approx(want, abs=1e-6), (idx, t, r)
                checked += 1
            if has_eos:
                text = COMPLETIONS[idx]
                lines = text.split("\n")
                items = len(lines) - (1 if lines[-1] == "" else 0)
                want = opts.eos_bonus if items == K else (opts.early_stop_penalty if items < K else opts.overflow_penalty)
                assert adv[-1].item() == pytest.approx(want), (idx, items)
            assert torch.all(exp.advantages[row][~mask] == 0)
            assert exp.info["rank_grpo/adv_r01"][row].item() == pytest.approx(want_adv[idx, 0].item())
        assert exp.kl is None and torch.equal(exp.returns, exp.advantages)
    assert checked > 100
    assert (moved > 20) == (opts.separator == "start")  # every newline-bearing token changed rank, and only those


@pytest.mark.parametrize("args", [["--rank_grpo.advantage_level", "sequence"]], indirect=True)
def test_real_compute_advantages_sequence_level_gives_every_list_token_its_list_advantage(
        args, tokenizer, helpers, rollout):
    """--rank_grpo.advantage_level sequence: every token of ranks < K gets the list's advantage, worked out here
    from the hit counts alone (exp_inf: the list return is the number of hits; unbiased group std + 1e-4); the
    overflow tokens and the EOS get exactly the shaping they get at the rank level."""
    rollout_samples, opts = rollout
    assert opts.advantage_level == "sequence"
    _, hits = _expected_rank_adv(rollout_samples, opts)
    returns = hits.sum(dim=1).view(-1, GROUP)
    want_list = ((returns - returns.mean(1, keepdim=True)) / (returns.std(1, keepdim=True) + 1e-4)).view(-1)
    assert want_list.abs().max() > 0.5
    experiences = _run(_maker(args, tokenizer, helpers), rollout_samples)
    checked = 0
    for exp in experiences:
        for row, idx in enumerate(exp.index):
            mask = exp.action_mask[row].bool()
            tokens = exp.sequences[row, -exp.action_mask.shape[1]:][mask].tolist()
            adv = exp.advantages[row][mask]
            has_eos = tokens[-1] == tokenizer.eos_token_id
            for t, r in enumerate(_prefix_ranks(tokenizer, tokens)):
                if not (has_eos and t == len(tokens) - 1):
                    want = want_list[idx].item() if r < K else opts.overflow_penalty
                    assert adv[t].item() == pytest.approx(want, abs=1e-5), (idx, t, r)
                    checked += 1
            if has_eos:
                lines = COMPLETIONS[idx].split("\n")
                items = len(lines) - (1 if lines[-1] == "" else 0)
                want = opts.eos_bonus if items == K else (opts.early_stop_penalty if items < K else opts.overflow_penalty)
                assert adv[-1].item() == pytest.approx(want), (idx, items)
            assert exp.info["return"][row].item() == hits[idx].sum().item()
    assert checked > 100


def test_kl_as_reward_is_a_return_to_go(args, tokenizer, helpers, rollout):
    rollout_samples, _ = rollout
    base = _run(_maker(args, tokenizer, helpers), [s for s in rollout_samples])
    base_adv = {i: e.advantages[r].clone() for e in base for r, i in enumerate(e.index)}

    rollout_samples2, _ = rollout
    maker = _maker(args, tokenizer, helpers, kl=0.5)
    samples_list = maker.split_rollout_samples(rollout_samples2)
    gen = torch.Generator().manual_seed(0)
    kls = {}
    for s in samples_list:
        s.kl = torch.rand(s.action_mask.shape, generator=gen) * s.action_mask
        for r, i in enumerate(s.index):
            kls[i] = s.kl[r].clone()
    out = maker.compute_advantages_and_returns(samples_list)
    for e in out:
        for r, i in enumerate(e.index):
            m = e.action_mask[r].bool()
            penalty = (-0.5 * kls[i])
            togo = torch.flip(torch.cumsum(torch.flip(penalty, [0]), 0), [0])
            assert torch.allclose(e.advantages[r][m], (base_adv[i] + togo)[m], atol=1e-5)


def test_missing_hits_and_bad_label_are_clear(args, tokenizer, helpers, rollout):
    rollout_samples, _ = rollout
    for s in rollout_samples:
        s.info.pop("rank_grpo/hit_r03")
    with pytest.raises(ValueError, match="rank_grpo/hit_r03"):
        _run(_maker(args, tokenizer, helpers), rollout_samples)


def test_incomplete_groups_are_refused(args, tokenizer, helpers, rollout):
    rollout_samples, _ = rollout
    with pytest.raises(ValueError, match="not a multiple of --rollout.n_samples_per_prompt"):
        _run(_maker(args, tokenizer, helpers), rollout_samples[:-1])  # the last group is short
    maker = _maker(args, tokenizer, helpers)
    samples_list = maker.split_rollout_samples(rollout_samples)
    for s in samples_list:
        s.action_log_probs = torch.zeros_like(s.action_mask, dtype=torch.float32)
        s.kl = torch.zeros_like(s.action_mask, dtype=torch.float32)
    samples_list[1].index = list(samples_list[0].index)  # repeated sample ids: a group would be rebuilt wrongly
    with pytest.raises(ValueError, match="not a permutation"):
        maker.compute_advantages_and_returns(samples_list)


def test_malformed_label_names_the_sample(args, tokenizer, helpers):
    from rank_grpo_plugin.options import RankGRPOOptions
    from rank_grpo_plugin.openrlhf.reward import LabelError

    labels = list(LABELS)
    labels[5] = '{"groundtruth": "oops"}'
    samples = helpers.rollout_experiences(tokenizer, PROMPTS, COMPLETIONS, labels, RankGRPOOptions.from_args(args))
    with pytest.raises(LabelError, match=r"rollout sample 5 .*groundtruth"):
        _run(_maker(args, tokenizer, helpers), samples)


@pytest.mark.parametrize("packing", [False, True])
def test_replay_buffer_round_trips_rank_ids(args, tokenizer, helpers, rollout, packing):
    from openrlhf.trainer.ppo_utils import NaiveReplayBuffer

    from rank_grpo_plugin.openrlhf.estimator import action_rank_ids

    rollout_samples, _ = rollout
    experiences = _run(_maker(args, tokenizer, helpers), rollout_samples)
    want = {}
    for e in experiences:
        ranks = action_rank_ids(e.sequences, e.action_mask, tokenizer)
        for r, i in enumerate(e.index):
            m = e.action_mask[r].bool()
            want[i] = (ranks[r][m], e.advantages[r][m])
    buf = NaiveReplayBuffer(3, packing_samples=packing, cpu_offload=False)
    buf.target_device = torch.device("cpu")
    index_of = {}
    for e in experiences:
        for r, i in enumerate(e.index):
            index_of[e.sequences[r][e.attention_mask[r].bool()].tolist().__repr__()] = i
        buf.append(e)  # split_experience_batch + remove_padding_in_sequences
    assert len(buf) == len(COMPLETIONS)
    order = torch.randperm(len(buf), generator=torch.Generator().manual_seed(1)).tolist()
    for start in range(0, len(order), 3):
        batch = buf.collate_fn([buf[j] for j in order[start:start + 3]])  # make_experience_batch (re-pad)
        ranks = action_rank_ids(batch.sequences, batch.action_mask, tokenizer)
        for r in range(batch.sequences.shape[0]):
            key = batch.sequences[r][batch.attention_mask[r].bool()].tolist().__repr__()
            i = index_of[key]
            m = batch.action_mask[r].bool()
            assert torch.equal(ranks[r][m], want[i][0])
            assert torch.equal(batch.advantages[r][m], want[i][1])


def test_rank_ids_never_fail_on_out_of_vocabulary_ids(tokenizer):
    from rank_grpo_plugin.openrlhf.estimator import action_rank_ids

    nl = tokenizer("a\nb", add_special_tokens=False)["input_ids"]
    big = len(tokenizer) + 1000  # a padded embedding row vLLM could sample
    seq = torch.tensor([[1] + nl + [big, big] + nl])
    mask = torch.ones(1, seq.shape[1] - 1, dtype=torch.long)
    ranks = action_rank_ids(seq, mask, tokenizer)
    assert ranks.shape == mask.shape and ranks[0, -1].item() >= 1
