"""Bad input to every wrapped call: each raises its specific exception with
a message, never crashes the interpreter, and leaves the models' parameters,
gradients, training buffer and step count unchanged (hashed)."""
import numpy as np
import pytest

import ebt
from ebt import (ArgError, ArgTypeError, FormatError, IoError, NonFiniteError, StateError, TokenError,
                 UnsupportedError)
from conftest import TINY, model_hash, softmax

V = TINY["vocab_size"]


class Ctx:
    """Models, workspaces and good arrays; a case spoils one argument."""

    def __init__(self, tmp_path):
        rng = np.random.default_rng(5)
        self.m = ebt.Model.create(TINY, seed=1)
        self.sm = ebt.Model.create(TINY, seed=2, n_step_embed=2)
        self.tf = ebt.Model.create(TINY, seed=3, arch="transformer++")
        self.other = ebt.Model.create(TINY, seed=4)
        self.closed = ebt.Model.create(TINY, seed=5)
        self.closed.close()
        self.ws = self.m.workspace(2, 8)
        self.ws_fresh = self.m.workspace(2, 8)          # never observed
        self.ws_closed = self.m.workspace(1, 8)
        self.ws_closed.close()
        self.ws_dead_model = ebt.Model.create(TINY, seed=6).workspace(1, 8)
        self.ws_dead_model.model.close()
        self.ws_sm = self.sm.workspace(1, 8)
        self.ws_sm6 = self.m.workspace(1, 8)            # observes 6 of 8 tokens before each case
        self.ws_tf = self.tf.workspace(1, 8)
        self.t = rng.integers(0, V, (2, 6)).astype(np.int32)
        self.p = softmax(rng.standard_normal((2, 6, V)))
        self.v = rng.standard_normal((2, 6, V)).astype(np.float32)
        self.ws.observe(self.t)
        self.ws_sm.observe(self.t[:1])
        self.tmp = tmp_path
        (tmp_path / "garbage.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json at all}")

    def nan(self, a):
        a = a.copy()
        a.flat[3] = np.nan
        return a

    def close(self):
        for m in (self.m, self.sm, self.tf, self.other):
            m.close()


def out_with(**arrays):
    """A ThinkResult holding only the given arrays (for out=)."""
    from ebt.workspace import RESULT_ARRAYS
    fields = dict.fromkeys(RESULT_ARRAYS)
    fields.update(arrays)
    return ebt.ThinkResult(**fields, rows_evaluated=0, rows_budget=0, diverged=0)


def f64(a):
    return a.astype(np.float64)


def strided(a):
    """The same shape, not C-contiguous."""
    b = np.empty(a.shape + (2,), a.dtype)
    b[..., 0] = a
    return b[..., 0]


T_BAD = [   # (id, spoiled tokens, exception)
    ("tokens_float", lambda c: c.t.astype(np.float64), ArgTypeError),
    ("tokens_bool", lambda c: c.t > 3, ArgTypeError),
    ("tokens_none", lambda c: None, ArgError),
    ("tokens_3d", lambda c: c.t[None], ArgError),
    ("tokens_empty", lambda c: np.zeros((0,), np.int32), ArgError),
    ("tokens_high", lambda c: np.where(c.t == c.t[0, 0], V, c.t).astype(np.int32), TokenError),
    ("tokens_negative", lambda c: -c.t - 1, TokenError),
    ("tokens_huge_int64", lambda c: c.t.astype(np.int64) + 2**32, TokenError),
    ("tokens_strided", lambda c: strided(c.t), ArgError),
    ("tokens_strings", lambda c: [["a", "b"]], ArgTypeError),
    ("tokens_ragged", lambda c: [[1, 2], [3]], ArgTypeError),
    ("tokens_too_long", lambda c: np.zeros((1, 17), np.int32), ArgError),
]

CASES = []
for tid, tok, exc in T_BAD:
    if tid == "tokens_too_long":       # the library's check (S > max_seq_len); probs fit the shape
        CASES += [("energy_" + tid, lambda c, tok=tok: c.m.energy(tok(c), np.full((1, 17, V), 1.0 / V, np.float32)), exc),
                  ("think_" + tid, lambda c, tok=tok: c.m.think(tok(c)), ArgError),
                  ("train_step_" + tid, lambda c, tok=tok: c.m.train_step(tok(c), tok(c)), exc)]
        continue
    CASES += [
        ("energy_" + tid, lambda c, tok=tok: c.m.energy(tok(c), c.p), exc),
        ("hvp_" + tid, lambda c, tok=tok: c.m.hvp(tok(c), c.p, c.v), exc),
        ("energy_backward_" + tid, lambda c, tok=tok: c.m.energy_backward(tok(c), c.p), exc),
        ("mixed_backward_" + tid, lambda c, tok=tok: c.m.mixed_backward(tok(c), c.p, c.v), exc),
        ("lm_logits_" + tid, lambda c, tok=tok: c.tf.lm_logits(tok(c)), exc),
        ("lm_backward_" + tid, lambda c, tok=tok: c.tf.lm_backward(tok(c), c.t), exc),
        ("lm_backward_targets_" + tid, lambda c, tok=tok: c.tf.lm_backward(c.t, tok(c)), exc),
        ("observe_" + tid, lambda c, tok=tok: c.ws.observe(tok(c)), exc),
        ("think_" + tid, lambda c, tok=tok: c.m.think(tok(c)), exc),
        ("ws_think_" + tid, lambda c, tok=tok: c.ws.think(tok(c)), exc),
        ("train_step_" + tid, lambda c, tok=tok: c.m.train_step(tok(c), c.t), exc),
        ("train_step_targets_" + tid, lambda c, tok=tok: c.m.train_step(c.t, tok(c)), exc),
        ("train_grad_" + tid, lambda c, tok=tok: c.m.train_grad(tok(c), c.t), exc),
        ("train_accumulate_" + tid, lambda c, tok=tok: c.m.train_accumulate(c.t, tok(c)), exc),
    ]

P_BAD = [   # (id, spoiled [2, 6, V] real array, exception)
    ("float64", lambda c, a: f64(a), ArgTypeError),
    ("int", lambda c, a: a.astype(np.int32), ArgTypeError),
    ("shape", lambda c, a: a[:, :5].copy(), ArgError),
    ("transposed", lambda c, a: np.ascontiguousarray(a.transpose(1, 0, 2)), ArgError),
    ("strided", lambda c, a: strided(a), ArgError),
    ("none", lambda c, a: None, ArgError),
    ("nan", lambda c, a: c.nan(a), NonFiniteError),
    ("inf", lambda c, a: np.where(a == a.flat[0], np.inf, a).astype(np.float32), NonFiniteError),
    ("object", lambda c, a: "probs", ArgTypeError),
]
for pid, spoil in [(p[0], p[1]) for p in P_BAD]:
    exc = dict((p[0], p[2]) for p in P_BAD)[pid]
    CASES += [
        ("energy_probs_" + pid, lambda c, s=spoil: c.m.energy(c.t, s(c, c.p)), exc),
        ("hvp_probs_" + pid, lambda c, s=spoil: c.m.hvp(c.t, s(c, c.p), c.v), exc),
        ("hvp_v_" + pid, lambda c, s=spoil: c.m.hvp(c.t, c.p, s(c, c.v)), exc),
        ("energy_backward_probs_" + pid, lambda c, s=spoil: c.m.energy_backward(c.t, s(c, c.p)), exc),
        ("mixed_backward_v_" + pid, lambda c, s=spoil: c.m.mixed_backward(c.t, c.p, s(c, c.v)), exc),
        ("ws_energy_" + pid, lambda c, s=spoil: c.ws.energy(s(c, c.p)), exc),
        ("ws_hvp_probs_" + pid, lambda c, s=spoil: c.ws.hvp(s(c, c.p), c.v), exc),
        ("ws_hvp_v_" + pid, lambda c, s=spoil: c.ws.hvp(c.p, s(c, c.v)), exc),
        ("think_init_logits_" + pid, lambda c, s=spoil: c.m.think(c.t, init_logits=s(c, c.v)),
         ArgError if pid == "none" else exc),
        ("train_step_init_logits_" + pid, lambda c, s=spoil: c.m.train_step(c.t, c.t, init_logits=s(c, c.v)), exc),
        ("train_grad_init_logits_" + pid, lambda c, s=spoil: c.m.train_grad(c.t, c.t, init_logits=s(c, c.v)), exc),
        ("train_accumulate_init_logits_" + pid,
         lambda c, s=spoil: c.m.train_accumulate(c.t, c.t, init_logits=s(c, c.v)), exc),
    ]
# None is allowed (means "draw them") for init_logits: drop those cases
CASES = [cs for cs in CASES if not (cs[0].endswith("init_logits_none"))]

W_BAD = [   # per-position [2, 6] arrays: energy_backward weight, alpha_mult
    ("float64", lambda c: np.ones((2, 6)), ArgTypeError),
    ("shape", lambda c: np.ones((2, 5), np.float32), ArgError),
    ("nan", lambda c: c.nan(np.ones((2, 6), np.float32)), NonFiniteError),
]
for wid, w, exc in W_BAD:
    CASES += [("energy_backward_weight_" + wid, lambda c, w=w: c.m.energy_backward(c.t, c.p, weight=w(c)), exc),
              ("train_grad_alpha_mult_" + wid, lambda c, w=w: c.m.train_grad(c.t, c.t, alpha_mult=w(c)), exc),
              ("train_accumulate_alpha_mult_" + wid,
               lambda c, w=w: c.m.train_accumulate(c.t, c.t, alpha_mult=w(c)), exc)]

CASES += [
    # create / load / save
    ("create_vocab_0", lambda c: ebt.Model.create(vocab_size=0), ArgError),
    ("create_odd_head", lambda c: ebt.Model.create(d_model=30, n_heads=2), ArgError),
    ("create_heads", lambda c: ebt.Model.create(d_model=32, n_heads=3), ArgError),
    ("create_seed_negative", lambda c: ebt.Model.create(seed=-1), ArgError),
    ("create_seed_float", lambda c: ebt.Model.create(seed=1.5), ArgTypeError),
    ("create_field_str", lambda c: ebt.Model.create(vocab_size="x"), ArgTypeError),
    ("create_field_huge", lambda c: ebt.Model.create(vocab_size=2**40), ArgError),
    ("create_field_unknown", lambda c: ebt.Model.create(vocab=10), ArgTypeError),
    ("create_arch", lambda c: ebt.Model.create(arch="rnn"), ArgError),
    ("create_config_type", lambda c: ebt.Model.create(5), ArgTypeError),
    ("create_rope_nan", lambda c: ebt.Model.create(rope_theta=float("nan")), ArgError),
    ("model_ctor", lambda c: ebt.Model(123), TypeError),
    ("load_none", lambda c: ebt.Model.load(None), ArgError),
    ("load_int", lambda c: ebt.Model.load(123), ArgTypeError),
    ("load_nul", lambda c: ebt.Model.load("a\0b"), ArgError),
    ("load_missing", lambda c: ebt.Model.load(c.tmp / "missing.safetensors"), IoError),
    ("load_directory", lambda c: ebt.Model.load(c.tmp), IoError),
    ("load_garbage", lambda c: ebt.Model.load(c.tmp / "garbage.safetensors"), FormatError),
    ("save_none", lambda c: c.m.save(None), ArgError),
    ("save_no_dir", lambda c: c.m.save(c.tmp / "no" / "such" / "dir.safetensors"), IoError),
    ("save_closed", lambda c: c.closed.save(c.tmp / "x.safetensors"), StateError),
    # use after close: every Model call
    ("closed_energy", lambda c: c.closed.energy(c.t, c.p), StateError),
    ("closed_hvp", lambda c: c.closed.hvp(c.t, c.p, c.v), StateError),
    ("closed_energy_backward", lambda c: c.closed.energy_backward(c.t, c.p), StateError),
    ("closed_mixed_backward", lambda c: c.closed.mixed_backward(c.t, c.p, c.v), StateError),
    ("closed_lm_logits", lambda c: c.closed.lm_logits(c.t), StateError),
    ("closed_lm_backward", lambda c: c.closed.lm_backward(c.t, c.t), StateError),
    ("closed_config", lambda c: c.closed.config, StateError),
    ("closed_n_params", lambda c: c.closed.n_params, StateError),
    ("closed_tensor_names", lambda c: c.closed.tensor_names(), StateError),
    ("closed_param", lambda c: c.closed.param("alpha"), StateError),
    ("closed_grad", lambda c: c.closed.grad("alpha"), StateError),
    ("closed_set_threads", lambda c: c.closed.set_threads(1), StateError),
    ("closed_last_error", lambda c: c.closed.last_error, StateError),
    ("closed_workspace", lambda c: c.closed.workspace(), StateError),
    ("closed_think", lambda c: c.closed.think(c.t), StateError),
    ("closed_generate", lambda c: c.closed.generate([1], 2), StateError),
    ("closed_train_step", lambda c: c.closed.train_step(c.t, c.t), StateError),
    ("closed_train_grad", lambda c: c.closed.train_grad(c.t, c.t), StateError),
    ("closed_train_accumulate", lambda c: c.closed.train_accumulate(c.t, c.t), StateError),
    ("closed_train_buffer", lambda c: c.closed.train_buffer(), StateError),
    ("closed_train_apply", lambda c: c.closed.train_apply(), StateError),
    ("closed_zero_grad", lambda c: c.closed.zero_grad(), StateError),
    ("closed_train_reset", lambda c: c.closed.train_reset(), StateError),
    ("closed_train_steps_done", lambda c: c.closed.train_steps_done, StateError),
    # wrong arch
    ("energy_transformer", lambda c: c.tf.energy(c.t, c.p), UnsupportedError),
    ("hvp_transformer", lambda c: c.tf.hvp(c.t, c.p, c.v), UnsupportedError),
    ("energy_backward_transformer", lambda c: c.tf.energy_backward(c.t, c.p), UnsupportedError),
    ("mixed_backward_transformer", lambda c: c.tf.mixed_backward(c.t, c.p, c.v), UnsupportedError),
    ("lm_logits_ebt", lambda c: c.m.lm_logits(c.t), UnsupportedError),
    ("lm_backward_ebt", lambda c: c.m.lm_backward(c.t, c.t), UnsupportedError),
    ("think_transformer", lambda c: c.ws_tf.think(c.t[:1]), UnsupportedError),
    ("observe_transformer", lambda c: c.ws_tf.observe(c.t[:1]), UnsupportedError),
    # scalars
    ("energy_step_negative", lambda c: c.m.energy(c.t, c.p, step=-1), ArgError),
    ("energy_step_float", lambda c: c.m.energy(c.t, c.p, step=1.0), ArgTypeError),
    ("energy_step_huge", lambda c: c.m.energy(c.t, c.p, step=2**40), ArgError),
    ("energy_grad_flag", lambda c: c.m.energy(c.t, c.p, grad=True)[0].shape == (7,) or 1 / 0, ZeroDivisionError),
    ("lm_backward_targets_shape", lambda c: c.tf.lm_backward(c.t, c.t[:, :5].copy()), ArgError),
    ("set_threads_negative", lambda c: c.m.set_threads(-1), ArgError),
    ("set_threads_huge", lambda c: c.m.set_threads(5000), ArgError),
    ("set_threads_str", lambda c: c.m.set_threads("2"), ArgTypeError),
    ("param_name_type", lambda c: c.m.param(5), ArgTypeError),
    ("param_unknown", lambda c: c.m.param("nope"), KeyError),
    ("grad_unknown", lambda c: c.m.grad("pred_embed.weight.x"), KeyError),
    # workspaces
    ("workspace_none_model", lambda c: ebt.Workspace(None), ArgError),
    ("workspace_max_B_0", lambda c: c.m.workspace(0, 4), ArgError),
    ("workspace_max_S_big", lambda c: c.m.workspace(1, 17), ArgError),
    ("workspace_max_S_0", lambda c: c.m.workspace(1, 0), ArgError),
    ("workspace_max_B_str", lambda c: c.m.workspace("2", 4), ArgTypeError),
    ("workspace_threads_negative", lambda c: setattr(c.ws, "threads", -1), ArgError),
    ("workspace_threads_float", lambda c: setattr(c.ws, "threads", 1.5), ArgTypeError),
    ("observe_exceeds_workspace", lambda c: c.ws.observe(np.zeros((3, 4), np.int32)), ArgError),
    ("observe_exceeds_S", lambda c: c.ws.observe(np.zeros((1, 9), np.int32)), ArgError),
    ("observe_wrong_model", lambda c: c.ws.observe(c.t, model=c.other), StateError),
    ("think_wrong_model", lambda c: c.other.think(c.t, workspace=c.ws), StateError),
    ("generate_wrong_model", lambda c: c.other.generate([1, 2], 3, workspace=c.ws), StateError),
    ("observe_step_negative", lambda c: c.ws.observe(c.t, step=-2), ArgError),
    ("ws_closed_observe", lambda c: c.ws_closed.observe(c.t[:1]), StateError),
    ("ws_closed_energy", lambda c: c.ws_closed.energy(c.p[:1]), StateError),
    ("ws_closed_hvp", lambda c: c.ws_closed.hvp(c.p[:1], c.v[:1]), StateError),
    ("ws_closed_think", lambda c: c.ws_closed.think(c.t[:1]), StateError),
    ("ws_closed_think_observed", lambda c: c.ws_closed.think_observed(), StateError),
    ("ws_closed_generate", lambda c: c.ws_closed.generate([1], 1), StateError),
    ("ws_closed_append", lambda c: c.ws_closed.observe_append([1]), StateError),
    ("ws_closed_threads", lambda c: c.ws_closed.threads, StateError),
    ("ws_closed_last_error", lambda c: c.ws_closed.last_error, StateError),
    ("ws_model_closed_think", lambda c: c.ws_dead_model.think(c.t[:1]), StateError),
    ("ws_model_closed_energy", lambda c: c.ws_dead_model.energy(c.p[:1]), StateError),
    ("ws_fresh_energy", lambda c: c.ws_fresh.energy(c.p), StateError),
    ("ws_fresh_hvp", lambda c: c.ws_fresh.hvp(c.p, c.v), StateError),
    ("ws_fresh_think_observed", lambda c: c.ws_fresh.think_observed(), StateError),
    ("ws_fresh_append", lambda c: c.ws_fresh.observe_append([1]), StateError),
    ("append_2d", lambda c: c.ws.observe_append(c.t), ArgError),
    ("append_batch_of_2", lambda c: c.ws.observe_append([1]), ArgError),     # (ws observes B = 2)
    ("append_step_model", lambda c: c.ws_sm.observe_append([1]), UnsupportedError),
    ("append_token", lambda c: c.ws_sm.observe_append([V]), TokenError),
    ("append_too_many", lambda c: c.ws_sm6.observe_append(np.ones(3, np.int32)), ArgError),
    # thinking options
    ("think_unknown_option", lambda c: c.m.think(c.t, stepz=2), ArgTypeError),
    ("think_init_logits_option", lambda c: c.m.think(c.t, opts=dict(init_logits=5)), ArgTypeError),
    ("think_steps_negative", lambda c: c.m.think(c.t, steps=-1), ArgError),
    ("think_steps_huge", lambda c: c.m.think(c.t, steps=2**40), ArgError),
    ("think_steps_over_limit", lambda c: c.ws.think(c.t, steps=100001), ArgError),
    ("think_steps_float", lambda c: c.m.think(c.t, steps=1.5), ArgTypeError),
    ("think_restarts_0", lambda c: c.m.think(c.t, restarts=0), ArgError),
    ("think_noise_negative", lambda c: c.m.think(c.t, noise=-1), ArgError),
    ("think_noise_nan", lambda c: c.m.think(c.t, noise=float("nan")), ArgError),
    ("think_noise_str", lambda c: c.m.think(c.t, noise="0.1"), ArgTypeError),
    ("think_alpha_rand", lambda c: c.m.think(c.t, alpha_rand=0.5), ArgError),
    ("think_step_size_inf", lambda c: c.m.think(c.t, step_size=float("inf")), ArgError),
    ("think_init_scale", lambda c: c.m.think(c.t, init_scale=-1), ArgError),
    ("think_tol_nan", lambda c: c.m.think(c.t, tol=float("nan")), ArgError),
    ("think_threshold_nan", lambda c: c.m.think(c.t, energy_threshold=float("nan")), ArgError),
    ("think_last_only_2", lambda c: c.m.think(c.t, last_only=2), ArgError),
    ("think_seed_negative", lambda c: c.m.think(c.t, seed=-1), ArgError),
    ("think_outputs", lambda c: c.m.think(c.t, outputs=("probs", "answer")), ArgError),
    ("think_init_logits_restarts", lambda c: c.m.think(c.t, restarts=2, init_logits=c.v), ArgError),
    ("think_opts_type", lambda c: c.m.think(c.t, opts=5), ArgTypeError),
    ("think_opts_wrong_struct", lambda c: c.m.think(c.t, opts=ebt.train_options()), ArgTypeError),
    ("generate_think_type", lambda c: c.m.generate([1], 2, think=[1]), ArgTypeError),
    ("train_opts_type", lambda c: c.m.train_step(c.t, c.t, opts="full"), ArgTypeError),
    ("think_out_type", lambda c: c.ws.think(c.t, out=5), ArgTypeError),
    ("think_out_dtype", lambda c: c.ws.think(c.t, out=out_with(probs=f64(c.p))), ArgError),
    ("think_out_readonly", lambda c: c.ws.think(c.t, out=out_with(probs=np.broadcast_to(c.p, c.p.shape))), ArgError),
    ("think_out_curvature_shape", lambda c: c.ws.think(c.t, out=out_with(curvature=np.zeros(6, np.float32))),
     ArgError),
    ("think_rel_drop_nan", lambda c: c.m.think(c.t, rel_drop=float("nan")), ArgError),
    ("think_grad_tol_inf", lambda c: c.m.think(c.t, grad_tol=float("inf")), ArgError),
    ("think_row_budget_negative", lambda c: c.m.think(c.t, row_budget=-1), ArgError),
    ("think_row_budget_float", lambda c: c.m.think(c.t, row_budget=1.5), ArgTypeError),
    ("think_clamp_negative", lambda c: c.m.think(c.t, clamp=-1), ArgError),
    ("think_keep_best_2", lambda c: c.m.think(c.t, keep_best=2), ArgError),
    ("think_observed_option", lambda c: c.ws.think_observed(restarts=-1), ArgError),
    # generation
    ("generate_prompt_2d", lambda c: c.m.generate(c.t, 3), ArgError),
    ("generate_prompt_empty", lambda c: c.m.generate([], 3), ArgError),
    ("generate_prompt_token", lambda c: c.m.generate([1, V], 3), TokenError),
    ("generate_prompt_float", lambda c: c.m.generate([1.5], 3), ArgTypeError),
    ("generate_prompt_none", lambda c: c.m.generate(None, 3), ArgError),
    ("generate_n_negative", lambda c: c.m.generate([1], -1), ArgError),
    ("generate_n_str", lambda c: c.m.generate([1], "3"), ArgTypeError),
    ("generate_temperature", lambda c: c.m.generate([1], 3, temperature=-1), ArgError),
    ("generate_top_p", lambda c: c.m.generate([1], 3, top_p=0), ArgError),
    ("generate_no_cache", lambda c: c.m.generate([1], 3, no_cache=2), ArgError),
    ("generate_unknown", lambda c: c.m.generate([1], 3, steps=2), ArgTypeError),
    ("generate_on_token_field", lambda c: c.m.generate([1], 3, opts=dict(on_token=1)), ArgTypeError),
    ("generate_think_bad", lambda c: c.m.generate([1], 3, think=dict(steps=-1)), ArgError),
    ("generate_think_unknown", lambda c: c.m.generate([1], 3, think=dict(temperature=1)), ArgTypeError),
    ("generate_on_token_type", lambda c: c.m.generate([1], 3, on_token=5), ArgError),
    ("generate_outputs", lambda c: c.m.generate([1], 3, outputs=("tokens",)), ArgError),
    # training options and arguments
    ("train_mode", lambda c: c.m.train_step(c.t, c.t, mode="fast"), ArgError),
    ("train_mode_int", lambda c: c.m.train_step(c.t, c.t, mode=7), ArgError),
    ("train_k", lambda c: c.m.train_step(c.t, c.t, k_min=0), ArgError),
    ("train_k_order", lambda c: c.m.train_step(c.t, c.t, k_min=3, k_max=2), ArgError),
    ("train_lr_nan", lambda c: c.m.train_step(c.t, c.t, lr=float("nan")), ArgError),
    ("train_beta", lambda c: c.m.train_step(c.t, c.t, beta1=1.0), ArgError),
    ("train_replay_frac", lambda c: c.m.train_step(c.t, c.t, replay_frac=2), ArgError),
    ("train_unknown", lambda c: c.m.train_step(c.t, c.t, learning_rate=1), ArgTypeError),
    ("train_targets_shape", lambda c: c.m.train_step(c.t, c.t[:1].copy()), ArgError),
    ("train_transformer_init_logits_nan", lambda c: c.m.train_grad(c.t, c.t, init_logits=c.nan(c.v)),
     NonFiniteError),
    ("train_accumulate_weight_0", lambda c: c.m.train_accumulate(c.t, c.t, weight=0), ArgError),
    ("train_accumulate_weight_str", lambda c: c.m.train_accumulate(c.t, c.t, weight="1"), ArgError),
    ("train_accumulate_weight_nan", lambda c: c.m.train_accumulate(c.t, c.t, weight=float("nan")), ArgError),
    ("train_accumulate_first_seq", lambda c: c.m.train_accumulate(c.t, c.t, first_seq=-1), ArgError),
    ("train_accumulate_first_seq_float", lambda c: c.m.train_accumulate(c.t, c.t, first_seq=0.5), ArgTypeError),
    ("train_apply_option", lambda c: c.m.train_apply(eps=0), ArgError),
    ("train_apply_unknown", lambda c: c.m.train_apply(bogus=1), ArgTypeError),
]
IDS = [cs[0] for cs in CASES]
assert len(set(IDS)) == len(IDS), [i for i in IDS if IDS.count(i) > 1]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    c = Ctx(tmp_path_factory.mktemp("bad"))
    c.hashes = [model_hash(m) for m in (c.m, c.sm, c.tf, c.other)]
    yield c
    c.close()


@pytest.mark.parametrize("name,call,exc", CASES, ids=IDS)
def test_bad_input(ctx, name, call, exc):
    ctx.ws.observe(ctx.t)                               # the state each case starts from
    ctx.ws_sm6.observe(ctx.t[0])
    with pytest.raises(exc) as e:
        call(ctx)
    if isinstance(e.value, ebt.EbtError):
        assert e.value.message and e.value.name in str(e.value)
        assert isinstance(e.value, (ValueError, TypeError, MemoryError, OSError, RuntimeError)) or \
            isinstance(e.value, UnsupportedError)
    assert [model_hash(m) for m in (ctx.m, ctx.sm, ctx.tf, ctx.other)] == ctx.hashes, "a failed call changed a model"


def test_nonfinite_parameters_are_not_saved(tmp_path):
    with ebt.Model.create(TINY, seed=1) as m:
        m.param("final_norm.weight")[3] = np.nan
        with pytest.raises(NonFiniteError, match="not saved"):
            m.save(tmp_path / "x.safetensors")
        assert not (tmp_path / "x.safetensors").exists()


def test_error_classes():
    assert issubclass(ArgTypeError, TypeError) and issubclass(ArgTypeError, ArgError)
    assert issubclass(IoError, OSError) and issubclass(StateError, RuntimeError)
    e = ebt.errors.error(3, "boom")
    assert isinstance(e, NonFiniteError) and e.status == 3 and str(e) == "EBT_ERR_NONFINITE: boom"
    assert ebt.errors.error(99, "x").status == 99
