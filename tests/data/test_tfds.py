"""TFDS inputs through `tfds.data_source` (array_record files): built here, read without TensorFlow."""

import json

import pytest

from helpers import prepared_documents, run_cli
from llm_jax import config as config_lib
from llm_jax.data.beam.units import plan_units, read_unit
from llm_jax.data.corpus import load_documents
from llm_jax.data.prepare import prepare
from llm_jax.data.sources import InputStats, read_documents
from llm_jax.data.tokenizers import train_tokenizer

tfds = pytest.importorskip("tensorflow_datasets", reason="the `tfds` extra (tensorflow-datasets) is not installed")


class TinyShakespeare(tfds.core.GeneratorBasedBuilder):
    """Scenes of the embedded corpus as a TFDS dataset with a `text` feature."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        from llm_jax.data.corpus import shakespeare_scenes
        scenes = shakespeare_scenes()
        return {"train": self._generate_examples(scenes[:40]), "test": self._generate_examples(scenes[40:45])}

    def _generate_examples(self, scenes):
        for i, scene in enumerate(scenes):
            yield i, {"text": scene}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    TinyShakespeare(data_dir=path, file_format="array_record").download_and_prepare()
    return path


def test_prepare_reads_a_tfds_array_record_dataset(tfds_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("data", "prepare", "--input", "tfds:tiny_shakespeare:train", "--output", out, "--json",
                   f"--config.data.tfds_dir={tfds_dir}", "--config.model.vocab_size=512")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["documents_in"] == 40 and counts["documents_out"] == 40 and counts["tokens_out"] > 10_000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"] == {"tfds:tiny_shakespeare:train": "tfds"}


def test_unknown_tfds_dataset_is_a_clear_error(tfds_dir, tmp_path):
    proc = run_cli("data", "prepare", "--input", "tfds:no_such_dataset", "--output", tmp_path / "o",
                   f"--config.data.tfds_dir={tfds_dir}")
    assert proc.returncode == 2 and "cannot open TFDS dataset 'tfds:no_such_dataset'" in proc.stderr


def test_the_beam_pipeline_reads_a_tfds_split_in_ranges_as_the_one_process_path_does(tfds_dir, small_corpus,
                                                                                      tmp_path):
    pytest.importorskip("apache_beam", reason="the `beam` extra (apache-beam) is not installed")
    from llm_jax.data.beam.pipeline import BeamSettings, prepare as beam_prepare

    spec = "tfds:tiny_shakespeare:train"
    cfg = config_lib.load_config(None, {"data.tfds_dir": tfds_dir, "data.val_fraction": "0.1"})
    units = plan_units([spec], cfg.data, 1 << 20, unit_records=7)
    stats, docs = InputStats(), []
    for unit in units:
        docs += list(read_unit(unit, cfg.data, stats))
    assert [(u.start, u.stop) for u in units] == [(i, min(i + 7, 40)) for i in range(0, 40, 7)]
    assert docs == list(read_documents([spec], InputStats(), tfds_dir=tfds_dir)) and len(docs) == 40

    tokenizer = tmp_path / "tok"
    train_tokenizer("bytelevel_bpe", load_documents(small_corpus), 400, str(tokenizer))
    quiet, seq_len = dict(log=lambda _: None), cfg.model.seq_len
    want = prepare([spec], str(tmp_path / "memory"), cfg.data, 400, seq_len, tokenizer=str(tokenizer), **quiet)
    beam_prepare([spec], str(tmp_path / "beam"), cfg.data, 400, BeamSettings(workers=1), seq_len,
                 tokenizer=str(tokenizer), **quiet)
    manifest = json.loads((tmp_path / "beam" / "manifest.json").read_text())
    assert manifest["sources"] == want["sources"] == {spec: "tfds"}
    for key in ("documents_in", "documents_out", "tokens_out"):
        assert manifest["counts"][key] == want["counts"][key], key
    assert want["counts"]["documents_in"] == 40
    assert prepared_documents(tmp_path / "beam") == prepared_documents(tmp_path / "memory")
