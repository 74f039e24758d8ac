"""The data a training run reads, from its config: prepared directories, prepared on first use — or, for the
seq2seq objective, the (input, target) pairs of `data.pairs` (llm_jax/data/pairs.py); for the sft objective,
the fine-tuning examples of `data.sft` (llm_jax/data/sft.py); for reward models and DPO, the preference pairs of
`data.preferences` (llm_jax/data/preferences.py); for the vlm objective, the synthetic scenes of `data.scenes`
(llm_jax/data/scenes.py).

`data.mixture` (several datasets with weights), else `data.prepared` (one directory written by
`llm-jax data prepare`), else `data.corpus` — which is prepared with the same code into the cache directory,
under a key covering the inputs' content and every data setting, so a changed corpus or setting never reuses
stale tokens and an unchanged one is prepared once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from llm_jax import config as config_lib
from llm_jax.data import corpus as corpus_lib
from llm_jax.data.loader import PackedWindows, fingerprint
from llm_jax.data.pairs import PairRows, load_pairs
from llm_jax.data.prepare import prepare
from llm_jax.data.preferences import PreferenceRows, load_preferences
from llm_jax.data.scenes import SceneRows, load_scenes
from llm_jax.data.sft import SFTRows, load_sft
from llm_jax.data.shards import MANIFEST, MANIFEST_VERSION, PreparedDataError, PreparedSplit, read_manifest
from llm_jax.data.sources import source_hashes
from llm_jax.data.tokenizers import load_tokenizer
from llm_jax.errors import LlmJaxError
from llm_jax.fileio import read_bytes
from llm_jax.parallel import distributed

# The data settings that change what `prepare` writes (prefetch, workers and cache_dir do not).
PREPARE_KEYS = ("tokenizer", "tokenizer_kind", "text_field", "text_unit", "val_fraction", "shards", "tfds_dir",
                "dedup", "filter", "clean")


@dataclasses.dataclass
class TrainingData:
    tokenizer: object
    train: list[PackedWindows] | list[PairRows] | list[SFTRows] | list[PreferenceRows] | list[SceneRows]
    weights: list[float] | None
    val: PackedWindows | PairRows | SFTRows | PreferenceRows | SceneRows
    manifests: list[dict]
    fingerprint: str
    chat_template: str | None = None  # fine-tuning: the template the chats were rendered with (kept with the model)

    @property
    def unigram_entropy(self) -> float:
        return self.manifests[0]["unigram_entropy"]


def default_cache_dir() -> str:
    return os.environ.get("LLM_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llm_jax")


def corpus_inputs(corpus: str) -> list[str]:
    return [part.strip() for part in corpus.split(",") if part.strip()]


def _content_key(inputs: list[str]) -> dict:
    key = {}
    for item in inputs:
        if item in corpus_lib.EMBEDDED:
            key[item] = corpus_lib.fingerprint(corpus_lib.load_documents(item))
        else:
            key.update(source_hashes([item]))
    return key


def _settings(data_cfg) -> dict:
    return {k: (data_cfg[k].to_dict() if hasattr(data_cfg[k], "to_dict") else data_cfg[k]) for k in PREPARE_KEYS}


def cache_key(inputs: list[str], data_cfg, vocab_size: int) -> str:
    settings = _settings(data_cfg)
    if data_cfg.tokenizer and os.path.isfile(data_cfg.tokenizer):
        settings["tokenizer_sha256"] = hashlib.sha256(read_bytes(data_cfg.tokenizer, "tokenizer file")).hexdigest()
    if data_cfg.clean.quality_model:  # another model file at the same path is another preparation
        settings["quality_model_sha256"] = hashlib.sha256(
            read_bytes(data_cfg.clean.quality_model, "data.clean.quality_model file")).hexdigest()
    blob = {"version": MANIFEST_VERSION, "content": _content_key(inputs), "settings": settings,
            "vocab_size": vocab_size}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def prepared_dir(spec: str, data_cfg, vocab_size: int, seq_len: int, log=print, workdir_scorer=None) -> str:
    """A prepared directory for `spec`: itself if it holds a manifest, else the cache entry of the corpus
    (prepared now if absent: written to a temporary directory and renamed, so a cache entry is complete or
    missing; when another process finishes the same entry first, its copy is used)."""
    if os.path.isfile(os.path.join(spec, MANIFEST)):
        return spec
    inputs = corpus_inputs(spec)
    out = os.path.join(data_cfg.cache_dir or default_cache_dir(), "prepared", cache_key(inputs, data_cfg, vocab_size))
    if os.path.isfile(os.path.join(out, MANIFEST)):
        log(f"data: prepared tokens from {out}")
        return out
    try:
        prepare(inputs, out, data_cfg, vocab_size, seq_len, tokenizer=data_cfg.tokenizer, log=log,
                workdir_scorer=workdir_scorer)
    except LlmJaxError:
        if not os.path.isfile(os.path.join(out, MANIFEST)):
            raise
        log(f"data: another process prepared {out} meanwhile; using it")
    return out


def data_specs(data_cfg) -> list[str]:
    """The corpora or prepared directories a run reads: the mixture's, else data.prepared or data.corpus."""
    if data_cfg.mixture:
        return [m[0] for m in data_cfg.mixture]
    return [data_cfg.prepared or data_cfg.corpus]


def prepare_settings(data_cfg, vocab_size: int) -> str:
    """What decides the prepared data (inputs, PREPARE_KEYS, vocabulary), as a string to compare runs by."""
    return json.dumps({"specs": data_specs(data_cfg), "settings": _settings(data_cfg), "vocab_size": vocab_size}, sort_keys=True)


def tokenizer_vocab_size(cfg) -> int:
    """The vocabulary a run's tokenizer may use: model.vocab_size, less the top ids the objective reserves
    (MLM's [MASK], span corruption's sentinels: `config.reserved_ids`)."""
    return cfg.model.vocab_size - config_lib.reserved_ids(cfg)


def training_data(cfg, log=print, workdir_scorer=None) -> TrainingData:
    """The prepared splits, tokenizer and loader inputs of a run (preparing corpora into the cache on first use;
    `workdir_scorer` as in prepare.quality_filter)."""
    d, seq_len = cfg.data, cfg.model.seq_len
    if d.pairs:
        return _pair_data(cfg, log)
    if d.sft:
        return _sft_data(cfg, log)
    if d.preferences:
        return _preference_data(cfg, log)
    if d.scenes:
        return _scene_data(cfg, log)
    specs = data_specs(d)
    weights = [float(m[1]) for m in d.mixture] if d.mixture else None
    if distributed.is_primary():  # one process prepares (into the shared cache); the others wait, then read
        dirs = [prepared_dir(s, d, tokenizer_vocab_size(cfg), seq_len, log, workdir_scorer) for s in specs]
    distributed.barrier("llm_jax:data_prepared")
    if not distributed.is_primary():
        dirs = [prepared_dir(s, d, tokenizer_vocab_size(cfg), seq_len, log, workdir_scorer) for s in specs]
    manifests = [read_manifest(p) for p in dirs]
    shas = {m["tokenizer"]["sha256"] for m in manifests}
    if len(shas) > 1:
        raise PreparedDataError(f"the mixture's datasets were tokenized with different tokenizers: {dirs}")
    tokenizer = load_tokenizer(os.path.join(dirs[0], manifests[0]["tokenizer"]["file"]))
    if tokenizer.vocab_size > tokenizer_vocab_size(cfg):
        reserved = f" and train.objective={cfg.train.objective!r} reserves the top {config_lib.reserved_ids(cfg)} " \
                   f"id(s)" if tokenizer_vocab_size(cfg) < cfg.model.vocab_size else ""
        raise PreparedDataError(f"{dirs[0]}: the tokenizer has {tokenizer.vocab_size} tokens but "
                                f"model.vocab_size={cfg.model.vocab_size}{reserved}")
    train = [PackedWindows.from_split(PreparedSplit(p, "train", d.read_format), seq_len) for p in dirs]
    val = PackedWindows.from_split(PreparedSplit(dirs[0], "val", d.read_format), seq_len)
    for p, windows in zip(dirs, train):
        if len(windows) < cfg.train.batch_size and not d.mixture:
            raise corpus_lib.CorpusError(f"{p}: the train split has {len(windows)} sequences of {seq_len} tokens, "
                                         f"fewer than train.batch_size={cfg.train.batch_size}")
        if len(windows) == 0:
            raise corpus_lib.CorpusError(f"{p}: the train split has no sequence of {seq_len + 1} tokens")
    if len(val) == 0:
        raise corpus_lib.CorpusError(f"{dirs[0]}: the validation split has no sequence of {seq_len + 1} tokens; "
                                     f"raise data.val_fraction or lower model.seq_len")
    return TrainingData(tokenizer, train, weights, val, manifests, fingerprint(manifests, weights, cfg.train.seed))


def _pair_data(cfg, log) -> TrainingData:
    args = (cfg, tokenizer_vocab_size(cfg), cfg.data.cache_dir or default_cache_dir(), log)
    if distributed.is_primary():  # one process trains the tokenizer into the cache; the others then read it
        pairs = load_pairs(*args)
    distributed.barrier("llm_jax:pairs_prepared")
    if not distributed.is_primary():
        pairs = load_pairs(*args)
    if len(pairs.train) < cfg.train.batch_size:
        raise corpus_lib.CorpusError(f"data.pairs={cfg.data.pairs}: {len(pairs.train)} training pairs, fewer than "
                                     f"train.batch_size={cfg.train.batch_size}")
    return TrainingData(pairs.tokenizer, [pairs.train], None, pairs.val, [pairs.manifest], pairs.fingerprint)


def _sft_data(cfg, log) -> TrainingData:
    sft = load_sft(cfg, log)  # no cache: every process reads the file and the tokenizer itself
    if len(sft.train) < cfg.train.batch_size:
        raise corpus_lib.CorpusError(f"data.sft={cfg.data.sft}: {len(sft.train)} training rows, fewer than "
                                     f"train.batch_size={cfg.train.batch_size}")
    return TrainingData(sft.tokenizer, [sft.train], None, sft.val, [sft.manifest], sft.fingerprint, sft.chat_template)


def _preference_data(cfg, log) -> TrainingData:
    prefs = load_preferences(cfg, log)
    if len(prefs.train) < cfg.train.batch_size:
        raise corpus_lib.CorpusError(f"data.preferences={cfg.data.preferences}: {len(prefs.train)} training pairs, "
                                     f"fewer than train.batch_size={cfg.train.batch_size}")
    return TrainingData(prefs.tokenizer, [prefs.train], None, prefs.val, [prefs.manifest], prefs.fingerprint,
                        prefs.chat_template)


def _scene_data(cfg, log) -> TrainingData:
    scenes = load_scenes(cfg, log)  # generated, no cache: a pure function of the config
    if len(scenes.train) < cfg.train.batch_size:
        raise corpus_lib.CorpusError(f"data.scenes={cfg.data.scenes}: {len(scenes.train)} training examples, fewer "
                                     f"than train.batch_size={cfg.train.batch_size}")
    return TrainingData(scenes.tokenizer, [scenes.train], None, scenes.val, [scenes.manifest], scenes.fingerprint)
