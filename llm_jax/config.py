"""The one place that knows every config key, its default and its rules.

A config file is a Python module whose `get_config()` returns an `ml_collections.ConfigDict`, normally built
by calling `default_config()` and changing a few fields (or a work directory's `config.json`, to go on from a
trained or converted model). `load_config` imports it, applies command-line
overrides (`--config.model.n_layers=4`), fills derived fields (`resolve`) and checks every rule
(`validate`) before anything is compiled. Errors are `ConfigError`s that name the key and the rule broken.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import math
import os
import re
from typing import Any, Iterable

import ml_collections

from llm_jax.errors import UserError

# Logical axis -> mesh axes, in priority order (flax semantics: the first rule whose mesh axes are still free
# wins). `embed` on fsdp shards parameters ZeRO-3 style; activations reuse the names, and an axis already taken
# by `batch` falls back to unsharded.
DEFAULT_RULES = (
    ("stage", "stage"),
    ("exp", "expert"),                     # MoE expert weights and dispatched tokens: expert parallelism
    ("batch", ("data", "fsdp", "expert")),  # dense activations: the expert axis is one more data axis ...
    ("batch", ("data", "fsdp")),            # ... except in a tensor whose experts already use it
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("length", "context"),                 # context (sequence) parallelism: activations split along the sequence
    ("head_dim", None),
    ("layers", "stage"),
)

MESH_AXES = ("stage", "data", "fsdp", "expert", "context", "tensor")

CHOICES = {
    "model.family": ("decoder", "encoder", "encdec", "vlm"),  # llm_jax.models.FAMILIES (a test keeps the two equal)
    "model.positions": ("learned", "sinusoidal", "rope", "relative", "none"),
    "model.rope_scaling": ("none", "linear", "ntk", "dynamic", "yarn", "llama3"),  # rope_scaling.ROPE_SCALINGS
    "model.norm": ("layernorm", "rmsnorm"),
    "model.norm_position": ("pre", "post"),
    "model.ffn": ("relu", "gelu", "gelu_tanh", "swiglu", "geglu"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "dots"),
    "model.attention_impl": ("auto", "xla", "blockwise", "cudnn", "splash"),
    "model.moe_router": ("softmax", "sigmoid"),
    "model.kv_cache_dtype": ("compute", "int8"),
    "model.projector": ("linear", "mlp"),  # vlm: image features -> decoder tokens (llm_jax/models/vlm.py)
    "model.peft": ("none", "lora", "prefix", "adapter"),  # llm_jax.models.peft.KEYS + none (a test: equal)
    "model.weight_quant": ("none", "int8", "int4", "nf4"),  # llm_jax.models.quant_formats.METHODS + none (a test: equal)
    "train.schedule": ("cosine", "inverse_sqrt", "wsd", "constant"),
    "train.objective": ("causal_lm", "mlm", "span_corruption", "seq2seq", "sft", "reward", "dpo", "distill", "grpo",
                        "ppo", "vlm"),  # llm_jax.objectives.OBJECTIVES (a test: equal)
    "train.loss_scaling": ("auto", "dynamic", "none"),
    "train.dpo_loss": ("sigmoid", "ipo", "hinge"),  # llm_jax.objectives.dpo.LOSSES
    "train.rl_reward": ("exact", "overlap"),  # llm_jax.train.rollouts.REWARDS (a test: equal)
    "data.tokenizer_kind": ("bytelevel_bpe", "sentencepiece_bpe", "sentencepiece_unigram", "wordpiece", "char", "word"),
    "data.text_unit": ("file", "paragraph"),
    "data.read_format": ("auto", "numpy", "array_record"),
    "data.clean.normalize": ("", "NFC", "NFKC"),  # llm_jax.data.clean.normalize.FORMS
    "data.loss_mask": ("completion", "all"),
    "data.scene_images": ("pixels", "blank"),
    "train.nonfinite": ("stop", "skip"),
    "checkpoint.restore_mode": ("params", "full"),
}


# train.eval_tasks entries: every key an entry may have and its default (None: required; resolve fills the rest).
# kind: llm_jax.eval.tasks.KINDS; a path "shakespeare:<task>" is generated into <workdir>/eval_tasks/ by
# llm_jax.eval.shakespeare (a test keeps both lists equal). limit: items scored per evaluation (0 = all).
EVAL_TASK_KINDS = ("choice", "generate")
SHAKESPEARE_TASKS = ("next_line", "speaker")
EVAL_TASK_KEYS = {"kind": None, "path": None, "name": "", "num_fewshot": 0, "limit": 100, "fmt": "auto"}
GENERATE_TASK_KEYS = {"style": "plain", "max_new_tokens": 0}  # 0 = min(256, model.seq_len // 2)


class ConfigError(UserError):
    """A config that cannot run; the message names the key and the rule."""


def default_config() -> ml_collections.ConfigDict:
    """Every key with its default: the `tiny` CPU run on the embedded Shakespeare corpus."""
    c = ml_collections.ConfigDict()
    c.name = "tiny"

    c.model = ml_collections.ConfigDict()
    m = c.model
    m.family = "decoder"         # the model family (llm_jax/models/__init__.py): decoder-only, or encoder (BERT)
    m.vocab_size = 2048          # tokenizer vocabulary (a trained tokenizer gets exactly this many pieces)
    m.seq_len = 256              # training context; also the size of the learned position table
    m.d_model = 256
    m.n_layers = 4
    m.n_heads = 4
    m.n_kv_heads = 0             # 0 = n_heads (MHA); 1 = MQA; anything dividing n_heads = GQA
    m.head_dim = 0               # 0 = d_model // n_heads
    m.d_ff = 0                   # 0 = 4*d_model (relu/gelu) or 8/3*d_model rounded up (swiglu)
    m.ffn_multiple_of = 256      # rounding for the derived SwiGLU width
    m.positions = "learned"
    m.rope_theta = 10000.0
    # RoPE scaling for context extension (llm_jax/models/rope_scaling.py, docs/attention.md)
    m.rope_scaling = "none"      # none, linear (position interpolation), ntk, dynamic (NTK), yarn, llama3
    m.rope_factor = 1.0          # the extension factor s (new context / original context)
    m.rope_original_len = 0      # the context the model was trained at (dynamic, yarn, llama3 need it)
    m.rope_low_freq_factor = 1.0   # llama3: wavelengths above original_len / low are divided by the factor ...
    m.rope_high_freq_factor = 4.0  # ... those below original_len / high are kept; a smooth blend between
    m.rope_yarn_beta_fast = 32.0   # yarn: frequencies turning more often than this over original_len are kept ...
    m.rope_yarn_beta_slow = 1.0    # ... those turning less often than this are interpolated
    m.rope_attention_factor = 0.0  # yarn: scale of cos/sin; 0 = 0.1 ln(factor) + 1
    m.norm = "layernorm"
    m.norm_eps = 1e-5
    m.norm_position = "pre"
    m.ffn = "gelu"
    m.tie_embeddings = True
    m.use_bias = True
    m.dropout = 0.0
    m.dtype = "float32"          # compute dtype
    m.param_dtype = "float32"    # storage dtype of the (master) parameters
    m.remat = "none"
    m.loss_chunk = 0             # decoder: positions per chunk of the fused output head + cross-entropy, so the
                                 # float32 (batch, length, vocab) logits never exist whole (0 = one piece)
    m.scan_unroll = 1            # layers per scan iteration: 1 keeps compile time flat in depth; more trades
                                 # compile time for fewer per-layer copies (worth it on CPU for shallow models)
    m.init_std = 0.02
    m.attention_impl = "auto"    # xla (whole score matrix), blockwise (flash, pure JAX), cudnn (GPU), splash (TPU); auto picks
                                 # per backend, dtype, mask and length (llm_jax/models/attention.py, docs/attention.md)
    m.kv_cache_dtype = "compute"  # decoding's KV cache: the compute dtype, or int8 (absmax per position and head)
    m.attention_block = 512      # blockwise: query and key tile size
    m.attention_window = 0       # sliding window: a query sees this many positions up to itself (0 = all)
    m.local_global_pattern = 0   # with a window: every k-th layer is global (Gemma 2: 2, Gemma 3: 6); 0 = all local
    m.attention_stride = 0       # Sparse Transformer strided pattern: also keys at distance < s or a multiple of s
    m.attention_global_tokens = 0  # Longformer: the first n positions see and are seen by every position
    m.document_mask = False      # attend only within the same document of a packed sequence (segment ids)
    m.mup = False                # maximal update parametrization (Yang et al.): hyperparameters transfer across width
    m.mup_base_width = 256       # the d_model at which muP equals the standard parametrization (but for 1/d attention)
    # Encoder-only models (family "encoder", llm_jax/models/encoder.py; docs/families.md)
    m.type_vocab_size = 0        # token-type (segment A/B) embeddings; 0 = none (BERT: 2)
    m.num_labels = 0             # classes of the sequence-classification head on the pooled output; 0 = no head
    m.mask_token_id = -1         # MLM's [MASK] id; -1 = vocab_size - 1, left free by the tokenizer this run trains
    m.rel_buckets = 32           # positions="relative" (T5, encdec family): buckets of the relative position bias ...
    m.rel_max_distance = 128     # ... the offset beyond which all share the last bucket
    # Mixture of experts (llm_jax/models/moe.py): the feed-forward layer of every moe_every-th block becomes
    # n_experts expert FFNs of which a router picks top_k per token.
    m.moe_experts = 0            # 0 = dense (no MoE)
    m.moe_top_k = 2
    m.moe_every = 1              # every k-th block is MoE (the others dense); k must divide n_layers
    m.moe_shared_experts = 0     # experts every token also goes through (DeepSeek-style), unrouted
    m.moe_d_ff = 0               # width of one expert's FFN; 0 = d_ff
    m.moe_router = "softmax"     # "softmax" (Switch, Mixtral) or "sigmoid" (DeepSeek-V3) token-expert scores
    m.moe_norm_topk = True       # renormalise the chosen top_k weights to sum to 1
    m.moe_capacity_factor = 0.0  # 0 = dropless (grouped matmul); > 0 = fixed expert capacity, overflow dropped
    m.moe_balance_weight = 0.01  # Switch/GShard load-balancing loss E * sum_i fraction_i * mean_prob_i
    m.moe_z_weight = 0.001       # router z-loss mean(logsumexp(router logits)^2) (ST-MoE)
    # Weight-only quantization for inference (written by `llm-jax quantize`; llm_jax/quant/, docs/quantization.md)
    m.weight_quant = "none"      # none, int8 (per-channel absmax), int4 (group-wise min-max), nf4 (group-wise NF4)
    m.quant_group_size = 64      # int4/nf4: consecutive inputs sharing a scale; must divide every projection's inputs
    m.prune_masks = False        # layer projections carry a 0/1 kernel_mask (written by `llm-jax prune`; docs/pruning.md)
    # Parameter-efficient fine-tuning (llm_jax/models/lora.py, docs/finetuning.md): only the adapters train
    m.peft = "none"              # none, lora (a low-rank update beside each targeted projection), prefix
                                 # (trainable key/value prefixes per layer), adapter (bottleneck adapters)
    m.lora_rank = 8
    m.lora_alpha = 16.0          # the update is scaled by alpha / rank
    m.lora_dropout = 0.0         # dropout on the adapter's input (training only)
    m.lora_targets = r"(attention|mlp)/\w+$"  # regex searched in module paths ("layers/attention/query"): all
                                 # attention and MLP projections; e.g. "attention/(query|value)$" for q and v only
    m.value_head = False         # a scalar head on the final hidden state (reward models, PPO's value model)
    m.prefix_len = 16            # prefix: trainable key/value positions every query attends to, per layer
    m.adapter_dim = 64           # adapter: bottleneck width of x + W_up(ReLU(W_down x))
    # Vision-language models (family "vlm", llm_jax/models/vlm.py, docs/vlm.md): a ViT's patch features, projected,
    # are the first (image_size / patch_size)^2 positions of the decoder's input; model.seq_len counts text only
    m.image_size = 0             # square RGB images of this many pixels a side (vlm only; 0 = no vision tower)
    m.patch_size = 8             # the ViT's patches: patch_size x patch_size pixels, one token each
    m.vision_layers = 2          # the ViT's bidirectional blocks (the encoder family's, at the decoder's width)
    m.projector = "mlp"          # image features -> decoder tokens: linear, or mlp (two layers, GELU; LLaVA-1.5)

    c.train = ml_collections.ConfigDict()
    t = c.train
    t.objective = "causal_lm"    # the loss (llm_jax/objectives/): next-token prediction; mlm = masked LM (encoder);
                                 # span_corruption (T5 pretraining) / seq2seq (data.pairs) train encdec;
                                 # sft = supervised fine-tuning on data.sft (a decoder, usually from
                                 # checkpoint.restore_from); reward (a reward model, model.value_head) and dpo
                                 # train on the pairs of data.preferences; grpo and ppo on replies the policy
                                 # samples to data.sft's prompts (docs/finetuning.md)
    t.dpo_beta = 0.1             # dpo: the strength of the implicit KL constraint to the reference
    t.dpo_loss = "sigmoid"       # dpo: sigmoid (DPO), ipo, hinge (SLiC)
    t.dpo_label_smoothing = 0.0  # dpo with sigmoid: the assumed share of flipped labels (conservative DPO)
    t.teacher = ""               # distill: the teacher's work directory (same tokenizer: data.tokenizer = its)
    t.distill_alpha = 0.5        # distill: weight of the hard-label cross-entropy; 1 - alpha on the soft KL
    t.distill_temperature = 2.0  # distill: both distributions softened by this temperature (the KL scaled by T^2)
    t.distill_top_k = 32         # distill: the teacher's top k tokens per position carry its distribution
    # grpo / ppo (policy optimisation on sampled replies: llm_jax/train/rollouts.py, docs/finetuning.md)
    t.rl_group = 8               # replies sampled per prompt (train.batch_size / rl_group prompts a step)
    t.rl_reward = "exact"        # the rule scoring a reply against the record's reply
    t.reward_model = ""          # a reward model's work directory (train.objective=reward): scores replies instead
    t.rl_temperature = 1.0       # sampling temperature of the rollouts
    t.rl_max_new_tokens = 32     # the longest reply sampled
    t.rl_epochs = 1              # updates per rollout: a rollout sampled at step s trains steps s .. s+rl_epochs-1
    t.rl_clip = 0.2              # the ratio's clip range epsilon (ppo: the value clip too)
    t.rl_kl = 0.04               # beta: grpo's per-token KL term in the loss; ppo's KL penalty in the reward
    t.rl_value_coef = 0.1        # ppo: weight of the clipped value loss
    t.rl_gamma = 1.0             # ppo: discount over reply tokens
    t.rl_lambda = 0.95           # ppo: GAE's lambda
    t.rl_whiten_rewards = True   # ppo: scores whitened over each batch before GAE
    t.trainable = ".*"           # regex over parameter paths ("layers/attention/query/kernel"): what trains;
                                 # the rest is frozen (no gradient, no optimizer state, no update)
    t.steps = 700
    t.batch_size = 8             # global, in sequences
    t.micro_batches = 1          # gradient accumulation inside the jitted step
    t.seed = 0
    t.lr = 3e-3
    t.lr_min = 3e-4
    t.warmup_steps = 50
    t.schedule = "cosine"
    t.wsd_decay_fraction = 0.2   # warmup-stable-decay: the last fraction of steps decays linearly to lr_min
    t.weight_decay = 0.1
    t.b1 = 0.9
    t.b2 = 0.95
    t.eps = 1e-8
    t.grad_clip = 1.0            # 0 disables global-norm clipping
    t.loss_scaling = "auto"      # auto = dynamic loss scaling when model.dtype is float16
    t.loss_scale_init = 2.0**15
    t.loss_scale_period = 1000   # finite steps before the scale doubles
    t.eval_every = 100           # 0 = only at the start and the end
    t.eval_batches = 8
    t.eval_tasks = ()            # downstream tasks scored at every evaluation (decoder family): a sequence of dicts
                                 # {"kind": "choice"|"generate", "path": FILE or "shakespeare:next_line"|
                                 # "shakespeare:speaker", optional "name", "num_fewshot", "limit", "fmt" (+ "style",
                                 # "max_new_tokens" for generate)}; logged as eval/<name>/<metric> (EVAL_TASK_KEYS)
    t.log_every = 20
    t.profile_steps = ""         # "A:B": a jax.profiler trace of steps A..B into <workdir>/profile (TensorBoard/XProf)
    t.nonfinite = "stop"         # a non-finite loss/gradient: "stop" (checkpoint the last good state, exit) or
                                 # "skip" (drop that update, count it); float16 loss scaling always skips
    t.spike_factor = 0.0         # skip an update whose loss exceeds spike_factor x the running mean (0 = off)
    t.spike_limit = 5            # ... up to this many in a row, then stop as for a non-finite loss
    t.spike_warmup_steps = 100   # the running mean (EMA, decay 0.99) must settle before spikes are judged

    c.mesh = ml_collections.ConfigDict()
    c.mesh.stage = 1             # pipeline stages (the layer stack is cut into this many pieces)
    c.mesh.pipeline_microbatches = 0  # micro-batches in flight through the stages; 0 = 2 x mesh.stage
    c.mesh.pipeline_repeats = 1  # 1 = GPipe fill-drain; R > 1 = circular: each stage holds R layer groups
    c.mesh.data = -1             # -1 = all the devices the other axes leave
    c.mesh.fsdp = 1
    c.mesh.expert = 1            # expert parallelism: MoE experts split over it (dense layers see it as data)
    c.mesh.context = 1           # context parallelism: sequences split along their length (long context)
    c.mesh.tensor = 1
    # Multi-slice (TPU pods joined over the data-centre network): each axis above is the size *within* a
    # slice, and mesh.dcn_<axis> multiplies it across slices (usually dcn_data: data parallelism over DCN).
    c.mesh.dcn_stage = 1
    c.mesh.dcn_data = 1
    c.mesh.dcn_fsdp = 1
    c.mesh.dcn_expert = 1
    c.mesh.dcn_context = 1
    c.mesh.dcn_tensor = 1
    c.mesh.rules = DEFAULT_RULES

    c.data = ml_collections.ConfigDict()
    d = c.data
    d.corpus = "shakespeare"     # the embedded corpus, or paths (comma-separated) of text/JSONL/Parquet files,
                                 # directories, or tfds:NAME[:SPLIT]; prepared into the cache on first use
    d.prepared = ""              # a directory written by `llm-jax data prepare` (overrides data.corpus)
    d.mixture = ()               # ((prepared dir or corpus, weight), ...): weighted mixture (overrides both)
    d.tokenizer = ""             # "" = train one of data.tokenizer_kind; or a tokenizer file/directory
    d.tokenizer_kind = "sentencepiece_bpe"
    d.text_field = "text"        # JSONL / Parquet / TFDS field holding the text
    d.text_unit = "file"         # a text file is one document ("file") or one per blank-line block ("paragraph")
    d.val_fraction = 0.05        # share of documents held out (chosen by a hash of the document)
    d.shards = 4                 # output shards per split (--engine beam: at least one per 4 GiB of input)
    d.read_format = "auto"       # shards the loader reads: auto (numpy where present) | numpy | array_record
    d.workers = 0                # tokenizer processes; 0 = one per CPU
    d.prefetch = 4               # batches prepared ahead of the step by a background thread; 0 = off
    d.cache_dir = ""             # "" = $LLM_JAX_CACHE or ~/.cache/llm_jax
    d.tfds_dir = ""              # TFDS data_dir ("" = TFDS's default)
    d.pairs = ""                 # seq2seq: a JSONL of {"input": ..., "target": ...} records (replaces the corpus)
    d.target_len = 0             # seq2seq: decoder length in tokens, target + EOS (0 = model.seq_len)
    # Fine-tuning data (train.objective=sft; llm_jax/data/sft.py, docs/finetuning.md)
    d.sft = ""                   # JSONL of prompt/completion, chat ("messages"), ShareGPT or Alpaca records
    d.loss_mask = "completion"   # completion: the completion / assistant turns only; all: every token
    d.chat_template = ""         # "" = the tokenizer directory's chat template, else the plain one; "plain"; a file
    d.pack = True                # several examples per row (needs model.document_mask: none sees another)
    d.preferences = ""           # JSONL of (prompt, chosen, rejected) records: reward models and DPO
    d.scenes = 0                 # vlm: synthetic training scenes (llm_jax/data/scenes.py); 0 = none
    d.scene_images = "pixels"    # vlm: "blank" withholds every image (the text-only baseline)

    d.dedup = ml_collections.ConfigDict()
    d.dedup.exact = True         # drop documents whose normalised text (case, whitespace) was seen before
    d.dedup.near = True          # drop near-duplicates: MinHash over word shingles + LSH
    d.dedup.shingle = 5          # words per shingle
    d.dedup.bands = 16
    d.dedup.rows = 8             # bands*rows hash functions; candidates share a band of `rows` values
    d.dedup.threshold = 0.8      # estimated Jaccard similarity at which a document counts as a duplicate

    d.filter = ml_collections.ConfigDict()
    d.filter.min_chars = 1       # 0 disables each rule
    d.filter.max_chars = 0
    d.filter.min_words = 0
    d.filter.min_alpha_fraction = 0.0
    d.filter.max_duplicate_line_fraction = 1.0  # 1 disables
    d.filter.perplexity_model = ""              # "" off | "ngram" (character 5-gram trained here) | a work directory
    d.filter.perplexity_reference = ""          # ngram training text: a corpus spec; "" = the inputs (2-fold
                                                # cross-fitted: no document is scored by a model that saw it)
    d.filter.max_perplexity = 0.0
    d.filter.perplexity_quantile = 0.0          # drop the worst fraction by perplexity

    d.clean = ml_collections.ConfigDict()        # llm_jax/data/clean/ (docs/data_filters.md); every stage off by default
    d.clean.normalize = ""                       # Unicode normal form applied first: "" (as read) | NFC | NFKC
    d.clean.languages = ""                       # comma-separated ISO 639-1 codes to keep ("en"); "" keeps every language
    d.clean.min_language_prob = 0.0              # below this the language counts as "unknown"
    d.clean.quality_model = ""                   # a quality classifier .npz (experiments/quality/run.py --save); "" off
    d.clean.min_quality = 0.5                    # documents scoring below it are dropped
    d.clean.max_toxicity = 0.0                   # drop documents whose share of lexicon words exceeds it; 0 off
    d.clean.redact_pii = False                   # e-mails, phones, cards, IBANs, public IPs -> placeholders
    d.clean.substring_ngram = 0                  # cut spans of >= N words seen in an earlier document; 0 off

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 200     # steps between saves; 0 = only at the end (and on preemption)
    c.checkpoint.every_minutes = 0.0  # also save when this much wall time passed since the last save; 0 = off
    c.checkpoint.keep = 2        # the newest K checkpoints ...
    c.checkpoint.keep_every = 0  # ... plus every step divisible by M, kept permanently; 0 = none
    c.checkpoint.async_save = True  # write in the background while training continues
    c.checkpoint.restore_from = ""  # a fresh run starts from this work directory or checkpoints/<step> dir
    c.checkpoint.restore_mode = "params"  # restore_from: "params" (fresh optimizer, step 0) or "full" state
    return c


# ----------------------------------------------------------------------------------------------- loading


def _flatten(cfg: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def load_config_file(path: str) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"config file {path!r} is not readable")
    if path.endswith(".json"):  # a work directory's config.json: fine-tune or continue a converted model
        try:
            with open(path, encoding="utf-8") as f:
                return config_from_json(f.read())
        except (ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"config file {path!r} is not a work directory's config.json: {e}") from e
    spec = importlib.util.spec_from_file_location("llm_jax_user_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a config file is user code: report which file failed and why
        raise ConfigError(f"config file {path!r} failed to load: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config() function")
    cfg = module.get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in {path!r} must return an ml_collections.ConfigDict")
    return cfg


def _check_known_keys(cfg: ml_collections.ConfigDict, source: str) -> None:
    known = _flatten(default_config())
    for key in _flatten(cfg):
        if key not in known:
            raise ConfigError(f"unknown config key {key!r} in {source}{_suggest(key, known)}")


def _parse_value(key: str, text: str, default: Any) -> Any:
    """Parses a command-line value to the type of the key's default."""
    if isinstance(default, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text}: expected true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                as_float = math.nan
            if as_float.is_integer():
                return int(as_float)
            raise ConfigError(f"--config.{key}={text}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text}: expected a number") from None
    if isinstance(default, str):
        return text
    try:  # tuples such as mesh.rules
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f"--config.{key}={text}: expected a Python literal") from None


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    known = _flatten(default_config())
    for key, text in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown config key {key!r} in --config.{key}{_suggest(key, known)}")
        value = _parse_value(key, text, known[key])
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            if p not in node:
                node[p] = ml_collections.ConfigDict()
            node = node[p]
        with node.ignore_type():
            node[leaf] = value
    return cfg


def _complete(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the defaults of keys a config file left out (a file may build its ConfigDict from scratch)."""
    full = default_config()
    for key, value in _flatten(cfg).items():
        *parents, leaf = key.split(".")
        node = full
        for p in parents:
            node = node[p]
        with node.ignore_type():
            node[leaf] = value
    return full


def load_config(path: str | None, overrides: dict[str, str] | None = None,
                n_devices: int | None = None) -> ml_collections.ConfigDict:
    """Config file (or the default) + overrides -> resolved, validated config."""
    if path:
        cfg = load_config_file(path)
        _check_known_keys(cfg, path)
        cfg = _complete(cfg)
    else:
        cfg = default_config()
    cfg = apply_overrides(cfg, overrides or {})
    cfg = resolve(cfg)
    validate(cfg, n_devices)
    return cfg


# Keys that older versions wrote into config.json and no longer exist: dropped when such a file is read back.
RETIRED_KEYS = ("train.inject_nan_step",)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Reads a work directory's config.json back (tuples come back as lists; rules are re-tupled)."""
    raw = json.loads(text)
    for key in RETIRED_KEYS:
        section, _, name = key.partition(".")
        if isinstance(raw.get(section), dict):
            raw[section].pop(name, None)
    cfg = ml_collections.ConfigDict(raw)
    _check_known_keys(cfg, "config.json")
    cfg = _complete(cfg)
    cfg.mesh.rules = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.mesh.rules)
    return resolve(cfg)


def to_json(cfg: ml_collections.ConfigDict) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


# ----------------------------------------------------------------------------------- derived fields


def swiglu_width(d_model: int, multiple_of: int) -> int:
    """LLaMA's rule: 2/3 of 4d, rounded up to a multiple (d=4096 -> 11008)."""
    hidden = int(2 * 4 * d_model / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def resolve(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills the fields whose 0 means 'derive me', so config.json records what actually ran."""
    m = cfg.model
    if m.n_kv_heads == 0:
        m.n_kv_heads = m.n_heads
    if m.head_dim == 0 and m.n_heads > 0 and m.d_model % m.n_heads == 0:
        m.head_dim = m.d_model // m.n_heads
    if m.d_ff == 0 and m.d_model > 0:
        m.d_ff = swiglu_width(m.d_model, m.ffn_multiple_of) if m.ffn in ("swiglu", "geglu") else 4 * m.d_model
    if isinstance(cfg.train.eval_tasks, (tuple, list)):
        with cfg.train.ignore_type():
            cfg.train.eval_tasks = resolved_eval_tasks(cfg)
    return cfg


def eval_task_name(path: str) -> str:
    """The default name of a task: shakespeare_<task>, or the file name without its extensions."""
    if path.startswith("shakespeare:"):
        return "shakespeare_" + path.partition(":")[2]
    return os.path.basename(os.path.normpath(path)).split(".")[0]


def resolved_eval_tasks(cfg) -> tuple:
    """train.eval_tasks with every default filled in each entry (entries that are not dicts are left to validate)."""
    return tuple(_resolve_eval_task(e, cfg.model.seq_len) if isinstance(e, dict) else e for e in cfg.train.eval_tasks)


def _resolve_eval_task(entry: dict, seq_len: int) -> dict:
    defaults = EVAL_TASK_KEYS | (GENERATE_TASK_KEYS if entry.get("kind") == "generate" else {})
    out = {k: entry.get(k, v) for k, v in defaults.items()} | entry
    if not out["name"] and isinstance(out["path"], str):
        out["name"] = eval_task_name(out["path"])
    if out.get("max_new_tokens") == 0:
        out["max_new_tokens"] = min(256, seq_len // 2)
    return out


# -------------------------------------------------------------------------------------------- rules


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def mesh_layout(cfg: ml_collections.ConfigDict, n_devices: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(within-slice sizes, across-slice sizes) of the MESH_AXES; the one -1 is filled."""
    dcn = tuple(cfg.mesh[f"dcn_{a}"] for a in MESH_AXES)
    for axis, size in zip(MESH_AXES, dcn):
        _require(isinstance(size, int) and size >= 1, f"mesh.dcn_{axis}={size}: must be a positive integer")
    slices = math.prod(dcn)
    _require(n_devices % slices == 0, f"mesh: the dcn axes multiply to {slices} slices, which does not divide "
                                      f"the {n_devices} devices")
    per_slice = n_devices // slices
    sizes = [cfg.mesh[a] for a in MESH_AXES]
    for axis, size in zip(MESH_AXES, sizes):
        _require(size == -1 or size >= 1, f"mesh.{axis}={size}: must be a positive integer or -1 (fill)")
    fills = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
    _require(len(fills) <= 1, f"mesh: only one axis may be -1, got {', '.join('mesh.' + a for a in fills)}")
    fixed = math.prod(s for s in sizes if s != -1)
    if fills:
        _require(per_slice % fixed == 0,
                 f"mesh: the fixed axes multiply to {fixed}, which does not divide the {per_slice} devices "
                 f"{'per slice ' if slices > 1 else ''}for mesh.{fills[0]}=-1 to fill")
        sizes = [per_slice // fixed if s == -1 else s for s in sizes]
    where = f" per slice ({n_devices} devices / {slices} slices)" if slices > 1 else ""
    _require(math.prod(sizes) == per_slice,
             f"mesh: {'*'.join(MESH_AXES)} = {'*'.join(map(str, sizes))} = {math.prod(sizes)}, "
             f"but there are {per_slice} devices{where}; the product must equal the device count "
             f"(use -1 on one axis to fill)")
    return tuple(sizes), dcn


def mesh_shape(cfg: ml_collections.ConfigDict, n_devices: int) -> dict[str, int]:
    """Global {axis: size} in MESH_AXES order: within-slice size x across-slice size per axis."""
    ici, dcn = mesh_layout(cfg, n_devices)
    return {axis: i * d for axis, i, d in zip(MESH_AXES, ici, dcn)}


def pipeline_microbatches(cfg) -> int:
    return cfg.mesh.pipeline_microbatches or 2 * cfg.mesh.stage


def validate(cfg: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
    """Every rule a run depends on, checked before anything compiles."""
    flat = _flatten(cfg)
    for key, choices in CHOICES.items():
        _require(flat[key] in choices, f"{key}={flat[key]!r}: must be one of {', '.join(map(repr, choices))}")

    m, t = cfg.model, cfg.train
    for key in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads"):
        _require(isinstance(m[key], int) and m[key] > 0, f"model.{key}={m[key]}: must be a positive integer")
    _require(m.head_dim != 0, f"model.n_heads={m.n_heads} does not divide model.d_model={m.d_model} "
                              f"(remainder {m.d_model % m.n_heads}); pick a divisor or set model.head_dim")
    for key in ("n_kv_heads", "head_dim", "d_ff"):
        _require(isinstance(m[key], int) and m[key] > 0, f"model.{key}={m[key]}: must be a positive integer")
    _require(m.n_heads % m.n_kv_heads == 0,
             f"model.n_kv_heads={m.n_kv_heads} must divide model.n_heads={m.n_heads} (GQA groups are equal)")
    _require(m.positions != "rope" or m.head_dim % 2 == 0,
             f"model.head_dim={m.head_dim}: RoPE rotates pairs, so the head dimension must be even")
    _require(m.positions != "sinusoidal" or m.d_model % 2 == 0,
             f"model.d_model={m.d_model}: sinusoidal positions need an even width")
    _require(m.rope_theta > 0, f"model.rope_theta={m.rope_theta}: must be positive")
    _validate_rope_scaling(m)
    _require(m.norm_eps > 0, f"model.norm_eps={m.norm_eps}: must be positive")
    _require(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout}: must be in [0, 1)")
    _require(m.init_std > 0, f"model.init_std={m.init_std}: must be positive")
    _require(m.mup_base_width > 0, f"model.mup_base_width={m.mup_base_width}: must be positive")
    _validate_family(cfg)
    _require(m.ffn_multiple_of > 0, f"model.ffn_multiple_of={m.ffn_multiple_of}: must be positive")
    _require(1 <= m.scan_unroll <= m.n_layers and m.n_layers % m.scan_unroll == 0,
             f"model.scan_unroll={m.scan_unroll}: must divide model.n_layers={m.n_layers}")
    _validate_moe(m)
    _validate_attention(m)
    _validate_weight_quant(m)
    _validate_peft(m)
    _validate_prune(m)

    _require(isinstance(t.steps, int) and t.steps > 0, f"train.steps={t.steps}: must be a positive integer")
    _require(t.batch_size > 0, f"train.batch_size={t.batch_size}: must be a positive integer")
    _require(t.micro_batches > 0, f"train.micro_batches={t.micro_batches}: must be a positive integer")
    _require(t.batch_size % t.micro_batches == 0,
             f"train.micro_batches={t.micro_batches} must divide train.batch_size={t.batch_size}")
    _require(t.lr > 0, f"train.lr={t.lr}: must be positive")
    try:
        re.compile(t.trainable)
    except re.error as e:
        raise ConfigError(f"train.trainable={t.trainable!r}: not a regular expression ({e})") from None
    _require(0 <= t.lr_min <= t.lr, f"train.lr_min={t.lr_min}: must be in [0, train.lr={t.lr}]")
    _require(0 <= t.warmup_steps <= t.steps,
             f"train.warmup_steps={t.warmup_steps}: must be in [0, train.steps={t.steps}]")
    _require(t.schedule != "inverse_sqrt" or t.warmup_steps > 0,
             "train.schedule='inverse_sqrt' needs train.warmup_steps > 0")
    _require(0 < t.wsd_decay_fraction <= 1, f"train.wsd_decay_fraction={t.wsd_decay_fraction}: must be in (0, 1]")
    _require(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay}: must be >= 0")
    _require(0 <= t.b1 < 1 and 0 <= t.b2 < 1, f"train.b1={t.b1}, train.b2={t.b2}: must be in [0, 1)")
    _require(t.eps > 0, f"train.eps={t.eps}: must be positive")
    _require(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip}: must be >= 0 (0 disables clipping)")
    _require(t.loss_scale_init >= 1, f"train.loss_scale_init={t.loss_scale_init}: must be >= 1")
    _require(t.loss_scale_period >= 1, f"train.loss_scale_period={t.loss_scale_period}: must be >= 1")
    _require(t.eval_every >= 0, f"train.eval_every={t.eval_every}: must be >= 0")
    _require(t.eval_batches >= 1, f"train.eval_batches={t.eval_batches}: must be >= 1")
    _require(t.log_every >= 1, f"train.log_every={t.log_every}: must be >= 1")
    _validate_eval_tasks(cfg)
    profile = re.fullmatch(r"(\d+):(\d+)", t.profile_steps)
    _require(t.profile_steps == "" or (profile is not None and 1 <= int(profile[1]) <= int(profile[2])),
             f"train.profile_steps={t.profile_steps!r}: must be 'A:B' with 1 <= A <= B (steps, inclusive), or ''")
    _require(t.spike_factor == 0 or t.spike_factor > 1, f"train.spike_factor={t.spike_factor}: must be 0 (off) or > 1")
    _require(t.spike_limit >= 0 and t.spike_warmup_steps >= 0,
             f"train.spike_limit={t.spike_limit}, train.spike_warmup_steps={t.spike_warmup_steps}: must be >= 0")
    _validate_data(cfg.data)
    ck = cfg.checkpoint
    _require(ck.every >= 0, f"checkpoint.every={ck.every}: must be >= 0")
    _require(ck.every_minutes >= 0, f"checkpoint.every_minutes={ck.every_minutes}: must be >= 0")
    _require(ck.keep >= 1, f"checkpoint.keep={ck.keep}: must be >= 1")
    _require(ck.keep_every >= 0, f"checkpoint.keep_every={ck.keep_every}: must be >= 0 (0 = none)")
    _validate_rules(cfg.mesh.rules)

    _validate_pipeline(cfg)
    if n_devices is not None:
        sizes = mesh_shape(cfg, n_devices)
        _require(not m.moe_experts or m.moe_experts % sizes["expert"] == 0,  # (a dense model: one more data axis)
                 f"mesh.expert={sizes['expert']} (with mesh.dcn_expert) must divide model.moe_experts="
                 f"{m.moe_experts}: the expert axis splits the experts")
        rows = sizes["data"] * sizes["fsdp"] * sizes["expert"]  # the axes the batch is split over
        lengths = {"model.seq_len": m.seq_len} | ({"data.target_len": cfg.data.target_len}
                                                  if cfg.data.target_len else {})
        for key, length in lengths.items():
            _require(length % sizes["context"] == 0,
                     f"{key}={length} must divide evenly over mesh.context={sizes['context']} (with "
                     f"mesh.dcn_context): context parallelism splits every sequence into equal pieces")
        per_micro = t.batch_size // t.micro_batches
        _require(per_micro % rows == 0,
                 f"train.batch_size={t.batch_size} / train.micro_batches={t.micro_batches} = {per_micro} "
                 f"sequences per micro-batch must divide evenly over mesh.data*mesh.fsdp*mesh.expert = {rows}")
        if cfg.mesh.stage > 1:
            per_pipe = per_micro // pipeline_microbatches(cfg)
            _require(per_pipe % rows == 0,
                     f"each pipeline micro-batch holds {per_pipe} sequences (train.batch_size={t.batch_size} / "
                     f"train.micro_batches={t.micro_batches} / {pipeline_microbatches(cfg)} pipeline micro-batches)"
                     f", which must divide over mesh.data*mesh.fsdp*mesh.expert = {rows}")


# Which model families each objective trains (an encoder has no next-token logits; a decoder cannot see the
# tokens after a [MASK]).
OBJECTIVE_FAMILIES = {"causal_lm": ("decoder",), "mlm": ("encoder",), "span_corruption": ("encdec",),
                      "seq2seq": ("encdec",), "sft": ("decoder",), "reward": ("decoder",), "dpo": ("decoder",),
                      "distill": ("decoder",), "grpo": ("decoder",), "ppo": ("decoder",), "vlm": ("vlm",)}

# T5 span corruption (llm_jax/objectives/span_corruption.py): the share of a window's tokens dropped, in spans of
# this mean length; each span becomes one sentinel id counted down from the top of the vocabulary.
NOISE_DENSITY = 0.15
MEAN_SPAN = 3.0


def span_corruption_counts(length: int) -> tuple[int, int]:
    """(noise tokens n, noise spans k) of span corruption on a window of `length` tokens."""
    noise = max(1, min(length - 1, round(NOISE_DENSITY * length)))
    return noise, max(1, min(noise, length - noise, round(noise / MEAN_SPAN)))


def reserved_ids(cfg) -> int:
    """How many ids at the top of model.vocab_size the run's objective keeps out of the tokenizer it trains: MLM's
    [MASK] (model.mask_token_id=-1) or span corruption's sentinels."""
    if cfg.train.objective == "mlm" and cfg.model.mask_token_id == -1:
        return 1
    if cfg.train.objective == "span_corruption":
        return span_corruption_counts(cfg.model.seq_len)[1]
    return 0


def _validate_rl(cfg) -> None:
    t, objective = cfg.train, cfg.train.objective
    _require(objective in ("grpo", "ppo") or not t.reward_model,
             f"train.reward_model={t.reward_model!r} scores the rollouts of grpo / ppo only")
    if objective not in ("grpo", "ppo"):
        return
    _require(bool(cfg.checkpoint.restore_from) and not cfg.data.pack and not cfg.model.loss_chunk,
             f"train.objective={objective!r} samples replies to one prompt per row from the model it starts from: "
             f"set checkpoint.restore_from (the KL reference), data.pack=false and model.loss_chunk=0")
    least = 2 if objective == "grpo" else 1  # a group of one has no relative advantage
    _require(t.rl_group >= least and t.batch_size % t.rl_group == 0,
             f"train.rl_group={t.rl_group} must be >= {least} and divide train.batch_size={t.batch_size}")
    _require(t.rl_epochs >= 1, f"train.rl_epochs={t.rl_epochs} must be >= 1 (updates per rollout)")
    _require(t.rl_max_new_tokens >= 1 and t.rl_temperature > 0 and 0 < t.rl_clip < 1 and t.rl_kl >= 0
             and t.rl_value_coef >= 0 and 0 <= t.rl_gamma <= 1 and 0 <= t.rl_lambda <= 1,
             f"train.rl_*: rl_max_new_tokens={t.rl_max_new_tokens} >= 1, rl_temperature={t.rl_temperature} > 0, "
             f"rl_clip={t.rl_clip} in (0, 1), rl_kl={t.rl_kl} >= 0, rl_value_coef={t.rl_value_coef} >= 0, "
             f"rl_gamma={t.rl_gamma} and rl_lambda={t.rl_lambda} in [0, 1]")
    _require(objective != "ppo" or cfg.model.value_head,
             "train.objective='ppo' learns a value per token on the policy's trunk: set model.value_head=true")


def _validate_vlm(cfg) -> None:
    m, objective = cfg.model, cfg.train.objective
    _require((objective == "vlm") == bool(cfg.data.scenes),
             f"train.objective={objective!r} with data.scenes={cfg.data.scenes!r}: the vlm objective trains on the "
             f"synthetic scenes of data.scenes and only it reads them; set both or neither")
    _require(isinstance(cfg.data.scenes, int) and cfg.data.scenes >= 0,
             f"data.scenes={cfg.data.scenes!r}: must be an integer >= 0 (0 = none)")
    _require((m.family == "vlm") == (m.image_size > 0),
             f"model.image_size={m.image_size} with model.family={m.family!r}: the vlm family needs an image size "
             f"(> 0) and only it has a vision tower; set both or neither")
    if m.family != "vlm":
        return
    _require(isinstance(m.patch_size, int) and m.patch_size >= 1 and m.image_size % m.patch_size == 0,
             f"model.patch_size={m.patch_size} must divide model.image_size={m.image_size}")
    _require(isinstance(m.vision_layers, int) and m.vision_layers >= 1 and m.vision_layers % m.scan_unroll == 0,
             f"model.vision_layers={m.vision_layers}: must be a positive integer that model.scan_unroll divides")
    _require(m.positions in ("rope", "none"),
             f"model.positions={m.positions!r}: the vlm family puts the image tokens before the text, past a "
             f"learned or sinusoidal table sized for the text; use model.positions='rope'")
    _require(not (m.document_mask or m.moe_experts or m.attention_window or m.attention_stride
                  or m.attention_global_tokens or m.value_head or m.prune_masks or m.weight_quant != "none"
                  or m.peft not in ("none", "lora") or m.loss_chunk or cfg.mesh.stage > 1),
             "the vlm family is a dense decoder behind a ViT: no document masks, MoE, attention patterns, value "
             "head, pruning masks, quantized weights, prefix/adapter PEFT, chunked loss or pipeline stages (LoRA "
             "works)")


def _validate_family(cfg) -> None:
    m, objective = cfg.model, cfg.train.objective
    families = OBJECTIVE_FAMILIES.get(objective, CHOICES["model.family"])
    _require(m.family in families, f"train.objective={objective!r} trains the {' or '.join(families)} family, but "
                                   f"model.family={m.family!r}; set model.family={families[0]!r} (or another "
                                   f"objective)")
    _require(isinstance(m.type_vocab_size, int) and m.type_vocab_size >= 0,
             f"model.type_vocab_size={m.type_vocab_size}: must be >= 0 (0 = no token-type embeddings)")
    _require(isinstance(m.num_labels, int) and m.num_labels >= 0,
             f"model.num_labels={m.num_labels}: must be >= 0 (0 = no classification head)")
    _require(m.mask_token_id == -1 or 0 <= m.mask_token_id < m.vocab_size,
             f"model.mask_token_id={m.mask_token_id}: must be -1 (the last id, vocab_size - 1, reserved) or an id "
             f"below model.vocab_size={m.vocab_size}")
    _require((objective == "seq2seq") == bool(cfg.data.pairs),
             f"train.objective={objective!r} with data.pairs={cfg.data.pairs!r}: the seq2seq objective trains on "
             f"(input, target) pairs and only it reads them; set both or neither")
    _require((objective in ("sft", "grpo", "ppo")) == bool(cfg.data.sft),
             f"train.objective={objective!r} with data.sft={cfg.data.sft!r}: the sft objective trains on the "
             f"fine-tuning examples of data.sft and grpo / ppo on their prompts, and only they read them; set both "
             f"or neither")
    _validate_rl(cfg)
    _validate_vlm(cfg)
    pairwise = objective in ("reward", "dpo")
    _require(pairwise == bool(cfg.data.preferences),
             f"train.objective={objective!r} with data.preferences={cfg.data.preferences!r}: the reward and dpo "
             f"objectives train on the preference pairs of data.preferences and only they read them; set both or "
             f"neither")
    _require(objective != "reward" or m.value_head,
             "train.objective='reward' scores replies with a scalar head: set model.value_head=true")
    _require(objective != "dpo" or cfg.checkpoint.restore_from,
             "train.objective='dpo' needs the reference model it starts from: set checkpoint.restore_from")
    _require(cfg.train.dpo_beta > 0 and 0 <= cfg.train.dpo_label_smoothing < 0.5,
             f"train.dpo_beta={cfg.train.dpo_beta} must be > 0 and train.dpo_label_smoothing="
             f"{cfg.train.dpo_label_smoothing} in [0, 0.5)")
    t = cfg.train
    _require((objective == "distill") == bool(t.teacher),
             f"train.objective={objective!r} with train.teacher={t.teacher!r}: distillation needs a teacher work "
             f"directory and only it reads one; set both or neither")
    _require(objective != "distill" or not m.loss_chunk,
             "train.objective='distill' compares whole output distributions: set model.loss_chunk=0")
    _require(objective != "distill" or (0 <= t.distill_alpha <= 1 and t.distill_temperature > 0
                                        and 1 <= t.distill_top_k <= m.vocab_size),
             f"train.distill_alpha={t.distill_alpha} must be in [0, 1], train.distill_temperature="
             f"{t.distill_temperature} > 0 and train.distill_top_k={t.distill_top_k} in [1, model.vocab_size]")
    _require(objective != "sft" or not cfg.data.pack or m.document_mask,
             "train.objective='sft' packs several examples per row (data.pack=true): set model.document_mask=true "
             "so that none attends to another, or data.pack=false")
    _require(isinstance(cfg.data.target_len, int) and cfg.data.target_len >= 0,
             f"data.target_len={cfg.data.target_len}: must be an integer >= 0 (0 = model.seq_len)")
    _require(isinstance(m.loss_chunk, int) and m.loss_chunk >= 0 and m.seq_len % max(m.loss_chunk, 1) == 0,
             f"model.loss_chunk={m.loss_chunk}: must be 0 (off) or a divisor of model.seq_len={m.seq_len}")
    _require(m.loss_chunk == 0 or (m.family == "decoder" and objective == "causal_lm"),
             f"model.loss_chunk={m.loss_chunk}: the chunked output head + cross-entropy is implemented for the "
             f"decoder's causal_lm objective only")
    _require(m.positions != "relative" or m.family == "encdec",
             f"model.positions='relative' (T5's bucketed bias) is implemented by the encdec family only, not "
             f"model.family={m.family!r}")
    for key in ("rel_buckets", "rel_max_distance"):
        _require(isinstance(m[key], int) and m[key] >= 2, f"model.{key}={m[key]}: must be an integer >= 2")
    if m.positions == "relative":  # each direction needs exact buckets (buckets // 4) and a log range above them
        _require(m.rel_buckets >= 4, f"model.rel_buckets={m.rel_buckets}: relative positions need at least 4 buckets")
        _require(m.rel_max_distance > m.rel_buckets // 2,
                 f"model.rel_max_distance={m.rel_max_distance}: must exceed half of model.rel_buckets="
                 f"{m.rel_buckets} (the offsets that get a bucket each)")
    _require(not m.mup or (m.family == "decoder" and not m.moe_experts),
             f"model.mup: muP's width scaling is implemented for the dense decoder only (model.family={m.family!r}, "
             f"model.moe_experts={m.moe_experts}); set model.mup=false")
    if m.family in ("encoder", "encdec"):
        _require(cfg.mesh.stage == 1, f"mesh.stage={cfg.mesh.stage}: the {m.family} family has no pipeline "
                                      f"parallelism yet; use mesh.stage=1")
        _require(m.moe_experts == 0, f"model.moe_experts={m.moe_experts}: the {m.family} family has no mixture of "
                                     f"experts yet; use model.moe_experts=0")
    if m.family == "encdec":
        _require(not m.document_mask, "model.document_mask: the encdec family does not pack documents yet; set "
                                      "model.document_mask=false")
    if m.family != "encoder":
        for key in ("type_vocab_size", "num_labels"):
            _require(m[key] == 0, f"model.{key}={m[key]} belongs to the encoder family (model.family='encoder'); "
                                  f"a {m.family} has no such parameters: leave it 0")


def _validate_eval_tasks(cfg) -> None:
    tasks, seq_len = cfg.train.eval_tasks, cfg.model.seq_len
    _require(isinstance(tasks, (tuple, list)), f"train.eval_tasks={tasks!r}: must be a list of task dicts")
    _require(not tasks or cfg.model.family == "decoder",
             f"train.eval_tasks: downstream tasks score continuations with a decoder-only model, not "
             f"model.family={cfg.model.family!r}; leave train.eval_tasks empty")
    names = set()
    for i, e in enumerate(tasks):
        where = f"train.eval_tasks[{i}]"
        _require(isinstance(e, dict), f"{where}={e!r}: must be a dict with at least 'kind' and 'path'")
        known = EVAL_TASK_KEYS | (GENERATE_TASK_KEYS if e.get("kind") == "generate" else {})
        for key in e:
            _require(key in known, f"{where}: unknown key {key!r}{_suggest(str(key), known)}; known keys: "
                                   f"{', '.join(known)}")
        _require(e.get("kind") in EVAL_TASK_KINDS,
                 f"{where}: kind={e.get('kind')!r} must be one of {', '.join(map(repr, EVAL_TASK_KINDS))}")
        path = e.get("path")
        _require(isinstance(path, str) and path.strip() != "",
                 f"{where}: needs a 'path': a task file, or shakespeare:{'|'.join(SHAKESPEARE_TASKS)}")
        _require(not path.startswith("shakespeare:") or path.partition(":")[2] in SHAKESPEARE_TASKS,
                 f"{where}: path={path!r}: the generated Shakespeare tasks are "
                 f"{', '.join('shakespeare:' + t for t in SHAKESPEARE_TASKS)}")
        _require(not path.startswith("shakespeare:") or e["kind"] == "choice",
                 f"{where}: path={path!r} is a multiple-choice task: use kind='choice'")
        name = e.get("name") or eval_task_name(path)
        _require(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None,
                 f"{where}: name={name!r}: must be letters, digits, '_', '.' or '-' (it becomes eval/<name>/...)")
        _require(name not in names, f"{where}: name {name!r} is used twice; give each task its own 'name'")
        names.add(name)
        for key in ("num_fewshot", "limit"):
            value = e.get(key, 0)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                     f"{where}: {key}={value!r} must be an integer >= 0")
        for key in ("fmt", "style"):
            _require(isinstance(e.get(key, ""), str), f"{where}: {key}={e.get(key)!r} must be a string")
        new = e.get("max_new_tokens", 0)
        _require(isinstance(new, int) and 0 <= new < seq_len,
                 f"{where}: max_new_tokens={new!r} must be an integer in [1, model.seq_len={seq_len}) (0 = "
                 f"min(256, seq_len // 2))")


def _validate_rope_scaling(m) -> None:
    if m.rope_scaling == "none":
        return
    _require(m.positions == "rope", f"model.rope_scaling={m.rope_scaling!r} scales rotary positions: it needs "
                                    f"model.positions='rope' (not {m.positions!r})")
    _require(m.rope_factor >= 1, f"model.rope_factor={m.rope_factor}: must be >= 1 (new context / original)")
    _require(m.rope_scaling not in ("dynamic", "yarn", "llama3") or m.rope_original_len > 0,
             f"model.rope_scaling={m.rope_scaling!r} needs model.rope_original_len (the context the model was "
             "trained at)")
    _require(0 < m.rope_low_freq_factor < m.rope_high_freq_factor,
             f"model.rope_low_freq_factor={m.rope_low_freq_factor}, model.rope_high_freq_factor="
             f"{m.rope_high_freq_factor}: need 0 < low < high")
    _require(0 < m.rope_yarn_beta_slow < m.rope_yarn_beta_fast,
             f"model.rope_yarn_beta_slow={m.rope_yarn_beta_slow}, model.rope_yarn_beta_fast="
             f"{m.rope_yarn_beta_fast}: need 0 < slow < fast")
    _require(m.rope_attention_factor >= 0, f"model.rope_attention_factor={m.rope_attention_factor}: must be >= 0")


def _validate_attention(m) -> None:
    for key in ("attention_window", "local_global_pattern", "attention_stride", "attention_global_tokens"):
        _require(isinstance(m[key], int) and m[key] >= 0, f"model.{key}={m[key]}: must be an integer >= 0")
    _require(isinstance(m.attention_block, int) and m.attention_block >= 8,
             f"model.attention_block={m.attention_block}: must be an integer >= 8")
    k = m.local_global_pattern
    if k:
        _require(m.attention_window > 0, f"model.local_global_pattern={k} alternates local (windowed) and global "
                                         "layers: set model.attention_window too")
        unit = math.lcm(k, m.moe_every if m.moe_experts else 1)  # the scanned group (transformer.unit_layout)
        _require(m.n_layers % unit == 0 and (m.n_layers // unit) % m.scan_unroll == 0,
                 f"model.local_global_pattern={k}: the scanned group of {unit} layers must divide model.n_layers="
                 f"{m.n_layers} into a number of groups that model.scan_unroll={m.scan_unroll} divides")
    _require(m.family != "encdec" or not (m.attention_window or m.attention_stride or m.attention_global_tokens),
             "model.attention_window/attention_stride/attention_global_tokens: the encdec family has no attention "
             "patterns yet; leave them 0")


def _validate_pipeline(cfg) -> None:
    m, t, stage, repeats = cfg.model, cfg.train, cfg.mesh.stage, cfg.mesh.pipeline_repeats
    _require(isinstance(stage, int) and stage >= 1, f"mesh.stage={stage}: must be a positive integer (no -1 fill)")
    _require(repeats >= 1 and cfg.mesh.pipeline_microbatches >= 0,
             f"mesh.pipeline_repeats={repeats}, mesh.pipeline_microbatches={cfg.mesh.pipeline_microbatches}: "
             f"must be >= 1 and >= 0")
    if stage == 1:
        return
    groups = stage * repeats
    _require(m.n_layers % groups == 0,
             f"model.n_layers={m.n_layers} does not split into mesh.stage={stage} x mesh.pipeline_repeats="
             f"{repeats} = {groups} equal layer groups; use a layer count divisible by {groups} (e.g. "
             f"{groups * max(1, round(m.n_layers / groups))}) or other stage/repeat counts")
    micro = pipeline_microbatches(cfg)
    _require(repeats == 1 or micro >= stage,
             f"mesh.pipeline_microbatches={micro} must be >= mesh.stage={stage} for the circular schedule "
             f"(mesh.pipeline_repeats={repeats})")
    per_micro = t.batch_size // t.micro_batches
    _require(per_micro % micro == 0,
             f"train.batch_size={t.batch_size} / train.micro_batches={t.micro_batches} = {per_micro} sequences do "
             f"not split into {micro} pipeline micro-batches; use a pipeline_microbatches dividing {per_micro}")
    _require(m.dropout == 0, f"model.dropout={m.dropout}: pipeline parallelism (mesh.stage={stage}) does not "
                             f"support dropout yet; set model.dropout=0")
    _require(m.moe_experts == 0, f"model.moe_experts={m.moe_experts}: pipeline parallelism (mesh.stage={stage}) "
                                 f"does not carry the MoE auxiliary losses through its stages yet; use mesh.expert "
                                 f"or mesh.fsdp instead of mesh.stage for an MoE model")


def _validate_moe(m) -> None:
    if m.moe_experts == 0:
        return
    _require(isinstance(m.moe_experts, int) and m.moe_experts >= 2,
             f"model.moe_experts={m.moe_experts}: must be 0 (dense) or at least 2")
    for key in ("moe_top_k", "moe_every"):
        _require(isinstance(m[key], int), f"model.{key}={m[key]!r}: must be an integer")
    _require(1 <= m.moe_top_k <= m.moe_experts,
             f"model.moe_top_k={m.moe_top_k}: must be in [1, model.moe_experts={m.moe_experts}]")
    _require(m.moe_every >= 1 and m.n_layers % m.moe_every == 0,
             f"model.moe_every={m.moe_every}: must divide model.n_layers={m.n_layers}")
    _require(m.moe_every == 1 or (m.n_layers // m.moe_every) % m.scan_unroll == 0,
             f"model.scan_unroll={m.scan_unroll}: must divide the {m.n_layers // m.moe_every} scanned groups of "
             f"model.moe_every={m.moe_every} layers")
    for key in ("moe_shared_experts", "moe_d_ff"):
        _require(isinstance(m[key], int) and m[key] >= 0, f"model.{key}={m[key]}: must be a non-negative integer")
    for key in ("moe_capacity_factor", "moe_balance_weight", "moe_z_weight"):
        _require(m[key] >= 0, f"model.{key}={m[key]}: must be >= 0")
    _require(m.moe_top_k > 1 or not m.moe_norm_topk,
             "model.moe_top_k=1 with model.moe_norm_topk=true gives every token a gate of exactly 1, so the loss never "
             "trains the router; set model.moe_norm_topk=false (Switch: the gate is the router probability)")


def _validate_prune(m) -> None:
    _require(not m.prune_masks or (m.weight_quant == "none" and m.family == "decoder" and not m.moe_experts),
             "model.prune_masks: pruning masks are implemented for the dense, unquantized decoder family")


def _validate_peft(m) -> None:
    if m.peft == "none":
        return
    _require(m.family in ("decoder", "vlm") and not m.moe_experts,
             f"model.peft={m.peft!r}: adapters are implemented for the dense decoder family (and the vlm family's "
             f"decoder) only")
    _require(isinstance(m.lora_rank, int) and m.lora_rank >= 1, f"model.lora_rank={m.lora_rank}: must be >= 1")
    _require(isinstance(m.prefix_len, int) and m.prefix_len >= 1, f"model.prefix_len={m.prefix_len}: must be >= 1")
    _require(isinstance(m.adapter_dim, int) and m.adapter_dim >= 1, f"model.adapter_dim={m.adapter_dim}: must be >= 1")
    _require(m.lora_alpha > 0, f"model.lora_alpha={m.lora_alpha}: must be positive")
    _require(0 <= m.lora_dropout < 1, f"model.lora_dropout={m.lora_dropout}: must be in [0, 1)")
    try:
        re.compile(m.lora_targets)
    except re.error as e:
        raise ConfigError(f"model.lora_targets={m.lora_targets!r}: not a regular expression ({e})") from None


def _validate_weight_quant(m) -> None:
    if m.weight_quant == "none":
        return
    _require(m.family == "decoder" and m.moe_experts == 0,
             f"model.weight_quant={m.weight_quant!r}: quantized weights are implemented for the dense decoder only, "
             f"not model.family={m.family!r} with model.moe_experts={m.moe_experts}")
    if m.weight_quant == "int8":  # per output channel: no groups
        return
    g = m.quant_group_size
    _require(isinstance(g, int) and g >= 2 and g % 2 == 0,
             f"model.quant_group_size={g}: must be an even integer >= 2 (4-bit codes are packed in pairs)")
    inputs = {"model.d_model": m.d_model, "model.n_heads*model.head_dim": m.n_heads * m.head_dim, "model.d_ff": m.d_ff}
    bad = [f"{key}={n}" for key, n in inputs.items() if n % g]
    _require(not bad, f"model.quant_group_size={g} must divide the inputs of every projection, but not "
                      f"{', '.join(bad)}; a group size dividing {math.gcd(*inputs.values())} does")


def _validate_data(d) -> None:
    _require(0 < d.val_fraction < 1, f"data.val_fraction={d.val_fraction}: must be in (0, 1)")
    flat = _flatten(d)
    for key in ("shards", "dedup.shingle", "dedup.bands", "dedup.rows"):
        _require(isinstance(flat[key], int) and flat[key] >= 1, f"data.{key}={flat[key]}: must be a positive integer")
    _require(d.workers >= 0 and d.prefetch >= 0, f"data.workers={d.workers}, data.prefetch={d.prefetch}: must be >= 0")
    _require(0 < d.dedup.threshold <= 1, f"data.dedup.threshold={d.dedup.threshold}: must be in (0, 1]")
    f = d.filter
    for key in ("min_chars", "max_chars", "min_words"):
        _require(f[key] >= 0, f"data.filter.{key}={f[key]}: must be >= 0 (0 disables it)")
    _require(not f.max_chars or f.max_chars >= f.min_chars,
             f"data.filter.max_chars={f.max_chars} is below data.filter.min_chars={f.min_chars}")
    _require(0 <= f.min_alpha_fraction <= 1, f"data.filter.min_alpha_fraction={f.min_alpha_fraction}: must be in [0, 1]")
    _require(0 <= f.max_duplicate_line_fraction <= 1,
             f"data.filter.max_duplicate_line_fraction={f.max_duplicate_line_fraction}: must be in [0, 1]")
    _require(0 <= f.perplexity_quantile < 1, f"data.filter.perplexity_quantile={f.perplexity_quantile}: must be in [0, 1)")
    _require(f.max_perplexity >= 0, f"data.filter.max_perplexity={f.max_perplexity}: must be >= 0")
    _require(not (f.max_perplexity or f.perplexity_quantile) or f.perplexity_model,
             "data.filter.max_perplexity / perplexity_quantile need data.filter.perplexity_model ('ngram' or a work directory)")
    c = d.clean
    _require(0 <= c.min_language_prob <= 1 and 0 <= c.min_quality <= 1 and 0 <= c.max_toxicity <= 1,
             f"data.clean: min_language_prob={c.min_language_prob}, min_quality={c.min_quality} and "
             f"max_toxicity={c.max_toxicity} must be in [0, 1]")
    _require(isinstance(c.substring_ngram, int) and c.substring_ngram >= 0,
             f"data.clean.substring_ngram={c.substring_ngram}: must be 0 (off) or a number of words")
    for entry in d.mixture:
        _require(isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
                 and isinstance(entry[1], (int, float)) and entry[1] > 0,
                 f"data.mixture: {entry!r} is not a (dataset, positive weight) pair")


def _validate_rules(rules) -> None:
    _require(isinstance(rules, (tuple, list)), "mesh.rules: must be a sequence of (logical, mesh) pairs")
    for rule in rules:
        _require(isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str),
                 f"mesh.rules: {rule!r} is not a (logical name, mesh axes) pair")
        targets = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        for axis in targets:
            _require(axis is None or axis in MESH_AXES,
                     f"mesh.rules: {rule!r} names mesh axis {axis!r}; known axes: {', '.join(MESH_AXES)}")
