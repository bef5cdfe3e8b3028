"""One real OpenRLHF actor training step on CPU with the tiny model: ActorPPOTrainer.ppo_train ->
training_step -> the rank-level loss (via the plugin's patch) -> backward -> optimizer step.

The strategy is a minimal plain-torch stand-in for DeepspeedStrategy (backward / optimizer_step / all_reduce on
one process); everything else -- Actor, ActorPPOTrainer, NaiveReplayBuffer, DataLoader, loss normalisation,
metrics -- is OpenRLHF's own code.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import test_estimator as te  # noqa: E402  (sibling module, not the `tests` package)


class TorchStrategy:
    """The subset of DeepspeedStrategy that ActorPPOTrainer.ppo_train/training_step call, in plain torch."""

    def __init__(self, args):
        self.args = args
        self.accumulated_gradient = 1
        self.ring_attn_group = None

    def backward(self, loss, model, optimizer, **kwargs):
        loss.backward()

    def optimizer_step(self, optimizer, model, scheduler, name="model", **kwargs):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    def get_grad_norm(self, model):
        return 0.0

    def all_reduce(self, data, op="mean"):
        return data

    def is_rank_0(self):
        return True

    def print(self, *args, **kwargs):
        pass

    def moving_average(self, *args, **kwargs):
        pass


@pytest.fixture(scope="module")
def process_group():
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        created = True
    yield
    if created:
        dist.destroy_process_group()


def _trainer(args, tiny_model, tokenizer):
    from openrlhf.models import Actor
    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32, attn_implementation="eager")
    actor = Actor(model)
    actor.packing_samples = False  # Actor(model_object) leaves it unset in 0.11.2
    actor.temperature = 1.0
    optim = torch.optim.SGD(actor.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda _: 1.0)
    return ActorPPOTrainer(
        TorchStrategy(args), actor, ema_model=None, actor_optim=optim, actor_scheduler=sched,
        micro_train_batch_size=args.train.micro_batch_size, tokenizer=tokenizer, dataloader_pin_memory=False,
    )


def _logprobs(trainer, exp):
    with torch.no_grad():
        return trainer.actor(exp.sequences, exp.action_mask, attention_mask=exp.attention_mask)


@pytest.mark.slow
@pytest.mark.parametrize("kl_loss", [False, True])
def test_actor_training_step_moves_positive_ranks_up(helpers, catalog_path, tiny_model, tokenizer,
                                                     process_group, monkeypatch, kl_loss):
    from rank_grpo_plugin.openrlhf.estimator import action_rank_ids
    from rank_grpo_plugin.openrlhf.policy_loss import RankGRPOPolicyLoss
    from rank_grpo_plugin.options import RankGRPOOptions

    monkeypatch.delenv("RANK_GRPO_PLUGIN_OPTIONS", raising=False)
    extra = ["--algo.kl.use_loss", "--algo.kl.estimator", "k3", "--algo.kl.init_coef", "0.01"] if kl_loss else \
        ["--algo.kl.init_coef", "0"]
    args = helpers.run_cli(helpers.base_argv + [
        "--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog", catalog_path,
        "--rank_grpo.num_ranks", str(te.K), "--rollout.n_samples_per_prompt", str(te.GROUP),
        "--rollout.micro_batch_size", "4", "--train.micro_batch_size", "8", "--train.max_epochs", "1",
        *extra,
    ])
    opts = RankGRPOOptions.from_args(args)
    samples = helpers.rollout_experiences(tokenizer, te.PROMPTS, te.COMPLETIONS, te.LABELS, opts)
    experiences = te._run(te._maker(args, tokenizer, helpers), samples)

    trainer = _trainer(args, tiny_model, tokenizer)
    assert isinstance(trainer.actor_loss_fn, RankGRPOPolicyLoss)
    assert (trainer.actor_loss_fn.eps_low, trainer.actor_loss_fn.eps_high) == (0.06, 0.08)
    before = []
    for e in experiences:
        e.action_log_probs = _logprobs(trainer, e)  # behaviour policy = current weights (on-policy step)
        e.base_action_log_probs = e.action_log_probs.clone() if kl_loss else None
        before.append(e.action_log_probs.clone())
        trainer.replay_buffer.append(e)
    trainer.replay_buffer.items.sort(key=lambda it: it.sequences.shape[0])  # deterministic content per batch

    status = trainer.ppo_train(kl_ctl=0.01 if kl_loss else 0.0)

    for key in ("policy_loss", "rank_grpo/clip_frac_low", "rank_grpo/clip_frac_high", "rank_grpo/ratio_mean",
                "rank_grpo/hit_r01", "rank_grpo/adv_r01", "rank_grpo/reward_r01", "rank_grpo/items_emitted",
                "rank_grpo/in_catalog_rate", "rank_grpo/ndcg"):
        assert key in status, (key, sorted(status))
    assert status["rank_grpo/ratio_mean"] == pytest.approx(1.0, abs=1e-4)  # one on-policy micro-batch
    if kl_loss:
        assert "kl" in status

    up = down = 0.0
    for e, old in zip(experiences, before):
        new = _logprobs(trainer, e)
        ranks = action_rank_ids(e.sequences, e.action_mask, tokenizer)
        m = e.action_mask.bool() & (ranks < te.K)
        delta = (new - old)[m]
        adv = e.advantages[m]
        up += delta[adv > 0].sum().item()
        down += delta[adv < 0].sum().item()
    assert up > 0, up  # log-probs of positive-advantage ranks went up
    assert down < 0, down  # and of negative-advantage ranks went down


@pytest.mark.slow
def test_ppo_loss_with_rank_advantages_keeps_openrlhf_loss(helpers, catalog_path, tiny_model, tokenizer,
                                                           process_group):
    from openrlhf.models import PolicyLoss

    args = helpers.run_cli(helpers.base_argv + [
        "--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog", catalog_path,
        "--actor.policy_loss_type", "ppo",
    ])
    trainer = _trainer(args, tiny_model, tokenizer)
    assert type(trainer.actor_loss_fn) is PolicyLoss


def test_loss_without_bound_experience_is_a_clear_error(helpers, catalog_path, tokenizer):
    from rank_grpo_plugin.openrlhf.policy_loss import RankGRPOPolicyLoss

    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo",
                                                "--rank_grpo.catalog", catalog_path])
    loss = RankGRPOPolicyLoss(args, tokenizer=tokenizer)
    x = torch.zeros(1, 3)
    with pytest.raises(RuntimeError, match="did not pass experience="):
        loss(x, x, x, action_mask=torch.ones(1, 3))


def test_loss_uses_rank_ids_carried_in_the_experience(helpers, catalog_path, tokenizer):
    """With ``Experience.extras`` (patches/) the estimator's rank ids are used as they are; without, the loss derives
    the same ids from the tokens."""
    from types import SimpleNamespace

    from rank_grpo_plugin.loss import rank_policy_loss
    from rank_grpo_plugin.openrlhf.estimator import RANK_IDS_KEY, action_rank_ids
    from rank_grpo_plugin.openrlhf.policy_loss import RankGRPOPolicyLoss

    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo",
                                                "--rank_grpo.catalog", catalog_path, "--rank_grpo.num_ranks", "3"])
    loss_fn = RankGRPOPolicyLoss(args, tokenizer=tokenizer)
    ids = torch.tensor([tokenizer("A (1999)\nB (2000)\nC (2001)\nD", add_special_tokens=False)["input_ids"]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(ids.shape, generator=g)
    old = lp + 0.1 * torch.randn(ids.shape, generator=g)
    adv = torch.randn(ids.shape, generator=g)
    derived = action_rank_ids(ids, mask, tokenizer)
    assert derived.max() == 3  # the 4th line is the overflow
    carried = torch.zeros_like(derived)  # deliberately different: every token in rank 0
    plain = SimpleNamespace(sequences=ids, action_mask=mask, info={})
    with_extras = SimpleNamespace(sequences=ids, action_mask=mask, info={}, extras={RANK_IDS_KEY: carried})
    for exp, ranks in ((plain, derived), (with_extras, carried)):
        got = loss_fn(lp, old, adv, action_mask=mask, experience=exp)[0]
        want = rank_policy_loss(lp, old, adv, ranks, mask, 3, 0.06, 0.08)[0]
        torch.testing.assert_close(got, want)


def test_token_mean_is_rescaled_to_the_global_token_count_like_aggregate_loss(helpers, catalog_path, tokenizer):
    """sum of token losses / batch_num_tokens * dp_size (OpenRLHF's pre-compensation), gradient included; the
    returned metrics are the core loss's stats."""
    from types import SimpleNamespace

    from rank_grpo_plugin.loss import rank_policy_loss
    from rank_grpo_plugin.openrlhf.estimator import RANK_IDS_KEY
    from rank_grpo_plugin.openrlhf.policy_loss import RankGRPOPolicyLoss

    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo",
                                                "--rank_grpo.catalog", catalog_path, "--rank_grpo.num_ranks", "3"])
    loss_fn = RankGRPOPolicyLoss(args, tokenizer=tokenizer)
    g = torch.Generator().manual_seed(1)
    b, t = 3, 12
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 7:] = False
    ranks = torch.where(mask, (torch.arange(t) // 3).expand(b, t), torch.full((b, t), -1))
    old = -torch.rand(b, t, generator=g)
    lp0 = old + 0.2 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, t, generator=g)
    exp = SimpleNamespace(sequences=torch.zeros(b, t + 2, dtype=torch.long), action_mask=mask, info={},
                          extras={RANK_IDS_KEY: ranks})
    lp = lp0.clone().requires_grad_(True)
    out = loss_fn(lp, old, adv, action_mask=mask.float(), dp_size=2, batch_num_tokens=torch.tensor(100.0),
                  experience=exp)
    loss, clip_ratio, ppo_kl = out[:3]  # then vllm_kl (and is_filter_ratio from 0.11.2 on): None
    loss.backward()
    ref_lp = lp0.clone().requires_grad_(True)
    core, stats = rank_policy_loss(ref_lp, old, adv, ranks, mask, 3, 0.06, 0.08)
    (core * mask.sum() / 100.0 * 2).backward()
    torch.testing.assert_close(loss, core.detach() * mask.sum() / 100.0 * 2)
    torch.testing.assert_close(lp.grad, ref_lp.grad)
    torch.testing.assert_close(clip_ratio, stats["clip_frac_low"] + stats["clip_frac_high"])
    torch.testing.assert_close(ppo_kl, -stats["log_ratio_mean"])
    torch.testing.assert_close(ppo_kl, -((lp0 - old) * mask).sum() / mask.sum())
    assert all(x is None for x in out[3:])
    torch.testing.assert_close(exp.info["rank_grpo/ratio_mean"], stats["ratio_mean"])
