"""The vision-language model (family "vlm"): the frozen ViT stays bit-identical while the projector trains, the
image changes the decoder's logits, the KV-cache decoder agrees with the full forward pass, the synthetic scenes'
answers are checkable, and `llm-jax generate --image` works end to end with one clear error per bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax.data import scenes as scenes_lib


def vlm_config(**train):
    cfg = config_lib.default_config()
    cfg.model.update(family="vlm", image_size=16, patch_size=8, vision_layers=1, projector="mlp", vocab_size=64,
                     seq_len=32, d_model=32, n_layers=2, n_heads=4, positions="rope")
    cfg.data.scenes = 8
    cfg.train.update(dict(dict(objective="vlm", trainable="(projector|decoder)/.*", steps=3, batch_size=8, lr=1e-2,
                               warmup_steps=1, lr_min=1e-3), **train))
    cfg = config_lib.resolve(cfg)
    config_lib.validate(cfg)
    return cfg


def leaves(tree, prefix):
    return {"/".join(str(k.key) for k in path): np.asarray(x)
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0] if str(path[0].key) == prefix}


@pytest.fixture(scope="module")
def trained():
    """(cfg, trainable, params before, params after) of three projector + decoder steps, the ViT frozen."""
    from llm_jax.train.trainable import build_trainable
    cfg = vlm_config()
    tok = scenes_lib.scene_tokenizer()
    rows = scenes_lib.SceneRows(scenes_lib.scenes(0, "train", 8, 16), tok, cfg.model.seq_len)
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    before = jax.tree.map(np.array, state.params)
    with trainable.activate():
        for step in range(3):
            batch = {k: np.stack([rows[(8 * step + r) % len(rows)][k] for r in range(8)]) for k in rows[0]}
            state, metrics = trainable.train_step(state, trainable.to_device(batch))
    return cfg, trainable, before, jax.tree.map(np.array, state.params)


def test_the_frozen_vision_tower_is_bit_identical_after_projector_training(trained):
    _, trainable, before, after = trained
    vision_before, vision_after = leaves(before, "vision"), leaves(after, "vision")
    assert vision_before and vision_before.keys() == vision_after.keys()
    for name in vision_before:
        assert vision_before[name].tobytes() == vision_after[name].tobytes(), name
    for part in ("projector", "decoder"):
        changed = [n for n, x in leaves(before, part).items() if not np.array_equal(x, leaves(after, part)[n])]
        assert changed, f"no {part} parameter changed"
    assert trainable.sizes()["trainable"] < trainable.sizes()["params"]  # the ViT holds no optimizer state


def test_the_image_changes_the_decoders_logits(trained):
    cfg, trainable, _, params = trained
    model, size = trainable.model, cfg.model.image_size
    sc = scenes_lib.scenes(0, "val", 2, size)
    tokens = jnp.asarray([scenes_lib.scene_tokenizer().encode("describe the image .") + [0] * 28] * 2)
    images = jnp.asarray(np.stack([s.image for s in sc]) / 255.0, jnp.float32)
    logits = model.apply({"params": params}, tokens, images_BHWC=images)
    swapped = model.apply({"params": params}, tokens, images_BHWC=images[::-1])
    assert logits.shape == (2, 32, 64)
    assert float(jnp.max(jnp.abs(logits - swapped[::-1]))) < 1e-5  # each row reads its own image ...
    assert float(jnp.max(jnp.abs(logits[0] - logits[1]))) > 1e-4   # ... and different images give other logits
    with pytest.raises(ValueError, match="this model reads"):
        model.apply({"params": params}, tokens, images_BHWC=images[:, :8])


def test_kv_cache_decoding_matches_the_full_forward_pass(trained):
    from llm_jax.infer.decode import generate
    cfg, trainable, _, params = trained
    model, tok = trainable.model, scenes_lib.scene_tokenizer()
    sc = scenes_lib.scenes(0, "val", 2, cfg.model.image_size)
    prompts = [tok.encode("describe the image ."), tok.encode("how many shapes are there ?")]
    images = np.stack([s.image for s in sc]).astype(np.float32) / 255.0
    new = generate(model, params, prompts, 5, cfg.model.seq_len, images=images).new_ids
    for prompt, ids, image in zip(prompts, new, images):
        assert len(ids) == 5
        text = prompt + ids
        logits = model.apply({"params": params}, jnp.asarray([text]), images_BHWC=jnp.asarray(image[None]))
        assert np.argmax(np.asarray(logits[0, len(prompt) - 1:len(text) - 1]), -1).tolist() == ids


def test_scene_answers_are_checkable():
    for split in ("train", "val"):
        for sc in scenes_lib.scenes(3, split, 40, 32):
            answers = {kind: (prompt, answer) for kind, prompt, answer in sc.examples}
            assert scenes_lib.parse_caption(answers["caption"][1]) == tuple(
                sorted(sc.items, key=lambda i: scenes_lib.CELLS.index(i.cell)))
            assert answers["count"][1] == scenes_lib.NUMBERS[len(sc.items)]
            assert scenes_lib.held_out(sc.items) == (split == "val")  # disjoint layouts
            for item in sc.items:  # the named colour is drawn in the named cell
                row, col = divmod(scenes_lib.CELLS.index(item.cell), 2)
                cell = sc.image[row * 16:(row + 1) * 16, col * 16:(col + 1) * 16].reshape(-1, 3).astype(int)
                target = np.asarray(scenes_lib.COLOURS[item.colour])
                assert (np.abs(cell - target).max(axis=1) <= 45).sum() >= 20, item
            shape = answers["colour"][0].split()[-2]
            assert answers["colour"][1] == next(i.colour for i in sc.items if i.shape == shape)
    assert scenes_lib.parse_caption("a red circle at the moon") is None
    tok = scenes_lib.scene_tokenizer()
    for sc in scenes_lib.scenes(0, "val", 5, 16):
        for _, prompt, answer in sc.examples:  # every word is in the vocabulary; answers decode to themselves
            assert tok.special["unk"] not in tok.encode(prompt) + tok.encode(answer)
            assert tok.decode(tok.encode(answer)) == answer


@pytest.fixture(scope="module")
def workdir(trained, tmp_path_factory):
    from llm_jax import checkpoint
    cfg, _, _, params = trained
    path = tmp_path_factory.mktemp("vlm") / "run"
    path.mkdir()
    scenes_lib.scene_tokenizer().save(str(path))
    checkpoint.save_params(str(path), params)
    (path / "config.json").write_text(config_lib.to_json(cfg))
    image = path / "scene.png"
    scenes_lib.save_png(str(image), scenes_lib.scene(0, "val", 0, 16).image)
    return path


def test_generate_with_an_image_runs_end_to_end(workdir, trained, capsys):
    from llm_jax.cli import main
    from llm_jax.infer.decode import generate
    cfg, trainable, _, params = trained
    capsys.readouterr()
    assert main(["generate", "--workdir", str(workdir), "--image", str(workdir / "scene.png"), "--prompt",
                 "describe the image .", "--max-new-tokens", "6", "--temperature", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    image = scenes_lib.load_image(str(workdir / "scene.png"), 16)
    assert np.array_equal(image, scenes_lib.scene(0, "val", 0, 16).image / np.float32(255.0))  # PNG is lossless
    expected = generate(trainable.model, params, [got["prompt_token_ids"]], 6, cfg.model.seq_len,
                        images=image[None], eos_id=scenes_lib.scene_tokenizer().eos_id).new_ids[0]
    assert got["new_token_ids"] == expected


def test_eval_vlm_reports_caption_and_vqa_scores(workdir):
    from llm_jax.eval.vlm import evaluate
    from llm_jax.infer.load import load_workdir
    result = evaluate(load_workdir(str(workdir)), n_scenes=3, batch_size=8, blind_scenes=50)
    assert result["n"] == 18 and len(result["samples"]) == 18
    for key in ("caption_exact_match", "vqa_accuracy", "blind_vqa_accuracy", "acc_count"):
        assert 0.0 <= result[key] <= 1.0
    assert result["blind_vqa_accuracy"] > 0.2  # "no", "nothing", "one": a blind guess beats zero


def test_bad_image_input_gives_one_clear_error(workdir, tmp_path, capsys):
    from llm_jax.cli import main
    small = tmp_path / "small.png"
    scenes_lib.save_png(str(small), np.zeros((8, 8, 3), np.uint8))
    text_only = tmp_path / "text"
    text_only.mkdir()
    cfg = config_lib.default_config()
    (text_only / "config.json").write_text(config_lib.to_json(config_lib.resolve(cfg)))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    cases = [(workdir, str(tmp_path / "nope.png"), "nope.png: no such file"),
             (workdir, str(small), "8x8 pixels, but the model reads 16x16"),
             (workdir, str(tmp_path / "junk.png"), "junk.png: not a readable image"),
             (workdir, None, "give the image the prompt is about with --image"),
             (text_only, str(small), "holds a text-only model (model.family='decoder')")]
    for path, image, message in cases:
        capsys.readouterr()
        args = ["generate", "--workdir", str(path), "--prompt", "describe the image ."]
        assert main(args + (["--image", image] if image else [])) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("projector", ["linear", "mlp"])
def test_every_vlm_parameter_has_logical_axes_and_the_count_formula_holds(projector):
    import flax.linen as nn
    from llm_jax.models import build_model
    from llm_jax.models.accounting import param_count
    cfg = vlm_config()
    cfg.model.projector = projector
    model = build_model(cfg.model)
    boxed = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.key(0))
    leaves_ = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves_ and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves_)
    assert set(boxed) == {"vision", "projector", "decoder"}
    assert param_count(cfg.model) == sum(x.size for x in jax.tree.leaves(nn.unbox(boxed)))


def test_stage_two_lora_trains_only_the_decoders_adapters():
    from llm_jax.train.trainable import build_trainable
    cfg = vlm_config(trainable=".*")
    cfg.model.update(peft="lora", lora_rank=4)
    config_lib.validate(cfg)
    rows = scenes_lib.SceneRows(scenes_lib.scenes(0, "train", 2, 16), scenes_lib.scene_tokenizer(), 32)
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    before = jax.tree.map(np.array, state.params)
    with trainable.activate():
        batch = {k: np.stack([rows[r][k] for r in range(8)]) for k in rows[0]}
        state, _ = trainable.train_step(state, trainable.to_device(batch))
    flat = lambda tree: {"/".join(str(k.key) for k in p): np.asarray(x)  # noqa: E731
                         for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    b, a = flat(before), flat(state.params)
    adapters = [n for n in b if n.endswith(("lora_a", "lora_b"))]
    assert adapters and all(n.startswith("decoder/layers/") for n in adapters)
    changed = {n for n in b if not np.array_equal(b[n], a[n])}
    assert changed and changed <= set(adapters)
