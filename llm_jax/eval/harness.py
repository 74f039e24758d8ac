"""lm-evaluation-harness adapter: the `llm_jax` model type, so any harness task runs on this project's models.

    pip install -e '.[harness]'            # lm-eval>=0.4.13
    python -m llm_jax.eval.harness --model llm_jax --model_args workdir=W,batch_size=16 --tasks hellaswag

lm-eval 0.4.13 finds models only in its own registry (`lm_eval.api.registry.model_registry`): it reads no entry
points and `--include_path` adds tasks, not models. So the model type exists once this module is imported:
`python -m llm_jax.eval.harness <lm_eval arguments>` imports it and then runs lm_eval's own command line (every
argument and subcommand of `lm_eval` works); from Python, `import llm_jax.eval.harness` and then
`lm_eval.simple_evaluate(model="llm_jax", model_args="workdir=W", ...)`.

The adapter is a thin wrapper over `eval/lm.py`'s `EvalModel`, which already has the harness's semantics (the
context/continuation split of `encode_pair`, rolling windows after the `hf` model's prefix token):

- `loglikelihood`: `Instance.args` (context, continuation) -> `EvalModel.loglikelihood` -> (logp, is_greedy).
- `loglikelihood_rolling`: (text,) -> `EvalModel.loglikelihood_rolling` -> the text's total log-likelihood.
  The token before the first window (and before a continuation with an empty context) is the harness's `hf`
  model's `prefix_token_id`: the tokenizer's BOS, else its EOS (EvalModel's `prefix_id`).
- `generate_until`: (context, gen_kwargs) -> `EvalModel.generate_until`, requests with equal gen_kwargs batched
  together. `until` (a string or a list) are the stop strings (generation also stops at end-of-text);
  `max_gen_toks` (default 256) is `max_new_tokens`; sampling is on when `do_sample` is true, or when `do_sample`
  is absent and `temperature` > 0, at `temperature` (default 1.0 when sampling) and `top_p`; otherwise greedy.
  Other keys (top_k, ...) are not supported and are ignored with a warning. A `max_gen_toks` that leaves no
  room for a prompt in the model's context is cut to half the context, with a warning.
- `apply_chat_template` (`--apply_chat_template`): the work directory's chat template (`data/chat.py`).

model_args: `workdir` (required), `batch_size` (rows per scoring call; model_args' wins over the harness's
`--batch_size`, which lm_eval's command line always passes, 1 unless given; `auto` means 16), `devices` (lay the
parameters out over this many devices by the run's mesh, for a model too big for one), `seed` (the sampling seed
of request i is seed + i). The harness's `--device` (always passed, `cuda:0` by default) and `--max_batch_size`
are ignored: JAX places the model on its default device(s)."""

from __future__ import annotations

import logging
import sys

import lm_eval.models  # noqa: F401  (the harness's own models: get_model imports them only into an empty registry)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import simple_parse_args_string

from llm_jax.errors import LlmJaxError, UserError

log = logging.getLogger("llm_jax.eval.harness")
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256  # the harness's hf model's default
GEN_KWARGS = ("until", "max_gen_toks", "temperature", "do_sample", "top_p")


def _int_arg(name: str, value, where: str = "model_args") -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise UserError(f"llm_jax {where}: {name} must be an integer, got {value!r}") from None
    if out < 1 and name != "seed":
        raise UserError(f"llm_jax {where}: {name} must be at least 1, got {value!r}")
    return out


def _float_arg(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"llm_jax gen_kwargs: {name} must be a number, got {value!r}") from None


@register_model("llm_jax")
class LlmJaxLM(LM):
    """A work directory's decoder-only model as an lm-evaluation-harness model (see the module docstring)."""

    def __init__(self, workdir: str | None = None, batch_size: int | str | None = None, devices=None, seed=0,
                 max_batch_size=None, device=None, model=None, **unknown):
        super().__init__()
        if unknown:
            raise UserError(f"llm_jax model_args: unknown {', '.join(sorted(unknown))} (known: workdir, batch_size, "
                            f"devices, seed)")
        if model is None:
            if not workdir:
                raise UserError("llm_jax needs model_args workdir=DIR (a trained or converted work directory)")
            from llm_jax.eval.lm import EvalModel
            if batch_size is None or str(batch_size).startswith("auto"):
                batch_size = DEFAULT_BATCH_SIZE
            devices_list = None
            if devices is not None:
                import jax
                n = _int_arg("devices", devices)
                if n > len(jax.devices()):
                    raise UserError(f"llm_jax model_args: devices={n} but only {len(jax.devices())} are visible")
                devices_list = jax.devices()[:n]
            model = EvalModel.from_workdir(workdir, batch_size=_int_arg("batch_size", batch_size),
                                           devices=devices_list)
        from llm_jax.data.chat import load_chat_template
        self.model, self.seed = model, _int_arg("seed", seed)
        self._template = load_chat_template(workdir) if workdir else None
        self._warned: set[str] = set()

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "LlmJaxLM":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "LlmJaxLM":
        """model_args win over the harness's own --batch_size / --device (which the command line always passes:
        the base class would fail on a batch_size given both ways)."""
        args = {k: v for k, v in (additional_config or {}).items() if v is not None}
        args.update(arg_dict)
        return cls(**args)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    # -- the three request types ------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(req.args) for req in requests]
        results = self.model.loglikelihood(pairs)
        for pair, result in zip(pairs, results):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [req.args[0] for req in requests]
        results = self.model.loglikelihood_rolling(texts)
        for text, result in zip(texts, results):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), result)
        return results

    def _generation_settings(self, gen_kwargs: dict) -> dict:
        for key in sorted(set(gen_kwargs) - set(GEN_KWARGS)):
            self._warn_once(f"kw:{key}", f"llm_jax ignores the generation setting {key}={gen_kwargs[key]!r} "
                                         f"(supported: {', '.join(GEN_KWARGS)})")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        if not all(isinstance(s, str) for s in until):
            raise UserError(f"generation setting until must be a string or a list of strings, got {until!r}")
        max_new = _int_arg("max_gen_toks", gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS), "gen_kwargs")
        seq_len = self.model.seq_len
        if max_new >= seq_len:
            self._warn_once("max_gen_toks", f"max_gen_toks={max_new} leaves no room for a prompt in the model's "
                                            f"context of {seq_len} tokens: generating at most {seq_len // 2}")
            max_new = seq_len // 2
        do_sample, temperature = gen_kwargs.get("do_sample"), gen_kwargs.get("temperature")
        temperature = None if temperature is None else _float_arg("temperature", temperature)
        sample = bool(do_sample) if do_sample is not None else (temperature is not None and temperature > 0)
        temperature = (1.0 if temperature is None else temperature) if sample else 0.0
        top_p = _float_arg("top_p", gen_kwargs.get("top_p", 1.0)) if sample else 1.0
        return dict(until=[s for s in until if s], max_new_tokens=max_new, temperature=temperature, top_p=top_p)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = {}
        settings: dict[str, dict] = {}
        for i, req in enumerate(requests):
            _, gen_kwargs = req.args
            s = self._generation_settings(dict(gen_kwargs or {}))
            key = repr(sorted(s.items()))
            settings[key] = s
            groups.setdefault(key, []).append(i)
        out: list[str | None] = [None] * len(requests)
        for key, rows in groups.items():
            prompts = [requests[i].args[0] for i in rows]
            texts = self.model.generate_until(prompts, seeds=[self.seed + i for i in rows],
                                              progress="llm_jax generate_until", **settings[key])
            for i, text in zip(rows, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    # -- chat templates (--apply_chat_template) ---------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return self.model.name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        from llm_jax.data.chat import PLAIN_TEMPLATE
        return chat_template if isinstance(chat_template, str) else (self._template or PLAIN_TEMPLATE)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from llm_jax.data import chat
        if not add_generation_prompt:
            raise UserError("llm_jax renders chat templates with the generation prompt only (tasks with a "
                            "gen_prefix are not supported with --apply_chat_template)")
        tok = self.model.tokenizer

        def special(role: str) -> str:
            i = tok.special.get(role)
            return "" if i is None else tok.decode([i])

        return chat.render(self._template, chat_history, special("bos"), special("eos"))


def main(argv: list[str] | None = None) -> None:
    """`lm_eval`'s command line with the `llm_jax` model type registered."""
    from lm_eval.__main__ import cli_evaluate
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        cli_evaluate()
    except LlmJaxError as e:  # a bad workdir or model_args: one line, the project's exit status
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_status)


if __name__ == "__main__":
    sys.modules.setdefault("llm_jax.eval.harness", sys.modules[__name__])  # one registration, not two
    main()
