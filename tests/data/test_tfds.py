"""TFDS inputs through `tfds.data_source` (array_record files): built here, read without TensorFlow."""

import json

import pytest

from helpers import run_cli

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
