"""Outputs an animator can use as they are: a transparent face stays transparent (its background
pixels exactly), sprite sheets with their JSON, frames and animations holding every frame (identical
ones too), a folder of faces with one output per input and a warning line per unreadable file,
sizes, several targets apart from one mixed affect, and one-line errors for arguments that cannot
be right. Real PNG files, the real `fexgan` executable, the tiny model trained once per session."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import fexgan
from fexgan.data import toon
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS
from fexgan.generation.animation import animation_bytes, frame_count, sprite_sheet
from fexgan.generation.matte import finish, key_alpha

FEXGAN = Path(sys.executable).parent / "fexgan"
SIDE = 128  # the inputs' size; outputs are asked at --size 128 so their pixels line up with the input's


def run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FEXGAN), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def alpha(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGBA", image.mode
    return np.asarray(image.getchannel("A"))


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> fexgan.generation.inference.FExGAN:
    return fexgan.load(tiny_model, "cpu")


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 px toon face on a transparent background, as a character artist has it."""
    path = tmp_path_factory.mktemp("face") / "ada.png"
    toon.render_face(toon.make_characters(1)[0], "neutral", size=SIDE).save(path)
    return path


def regions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the input's fully transparent pixels, its fully opaque pixels), both present."""
    a = alpha(Image.open(path))
    clear, solid = a == 0, a == 255
    assert clear.mean() > 0.2 and solid.mean() > 0.3
    return clear, solid


def assert_cut_out(image: Image.Image, clear: np.ndarray, solid: np.ndarray) -> None:
    """The input's background fully transparent in the output and its face fully opaque."""
    a = alpha(image)
    assert a.shape == clear.shape
    assert int(a[clear].max()) == 0 and int(a[solid].min()) == 255


# ----------------------------------------------------------------------------- the matte
def test_every_api_call_keeps_the_inputs_silhouette(model, face: Path) -> None:
    clear, solid = regions(face)
    for image in [*model.transfer(face, to="all", size=SIDE), model.mix(face, "anger=0.5,sadness=0.5", size=SIDE),
                  *model.morph(face, ["neutral", "joy"], frames=4, size=SIDE),
                  model.transfer(face, to="joy", keep_size=True)]:
        assert_cut_out(image, clear, solid)
    assert model.transfer(face, to="joy").size == (32, 32)          # the model's size by default
    assert model.transfer(face, to="joy", matte="none").mode == "RGB"
    opaque = Image.open(face).convert("RGB")
    assert model.transfer(opaque, to="joy").mode == "RGB"           # no alpha in, none out
    assert alpha(model.transfer(opaque, to="joy", matte="input")).min() == 255
    drawn = model.sample("joy", n=2, matte="key")
    assert all(im.mode == "RGBA" and alpha(im).min() == 0 and alpha(im).max() == 255 for im in drawn)
    with pytest.raises(UserError, match="no input silhouette"):
        model.sample("joy", n=1, matte="input")
    with pytest.raises(UserError, match="unknown matte 'green'"):
        model.transfer(face, to="joy", matte="green")


def test_outline_adds_only_near_the_silhouette(model, face: Path) -> None:
    """`outline` keeps the face and may add pixels within about 1/16 of the image of it (2 of the model's
    32 px, and a model pixel for scaling each way: 16 px at 128 px), no further."""
    silhouette = Image.open(face).getchannel("A").point(lambda v: 255 if v else 0)
    near = np.asarray(silhouette.filter(ImageFilter.MaxFilter(33))) > 0     # 16 px around the face
    a = np.asarray(silhouette) > 0
    for target in EXPRESSIONS:
        out = alpha(model.transfer(face, to=target, size=SIDE, matte="outline"))
        assert int(out[np.asarray(Image.open(face).getchannel("A")) == 255].min()) == 255
        assert int(out[~near].max()) == 0, target
    assert a.mean() < near.mean() < 1


def test_uncompositing_gives_the_edge_colours_back() -> None:
    """A face drawn over white and its matte give back the RGBA it came from (edges included)."""
    rng = np.random.default_rng(0)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (40, 40, 3))
    rgba[..., 3] = np.clip(np.add.outer(np.arange(40), np.arange(40)) * 4 - 60, 0, 255)
    original = Image.fromarray(rgba, "RGBA")
    over_white = Image.new("RGBA", original.size, (255, 255, 255, 255))
    over_white.alpha_composite(original)
    (back,) = finish([over_white.convert("RGB")], original, (255, 255, 255), "input")
    got, want = np.asarray(back).astype(int), rgba.astype(int)
    assert np.array_equal(got[..., 3], want[..., 3])
    visible = want[..., 3] >= 64
    assert np.abs(got[..., :3] - want[..., :3])[visible].max() <= 4


def test_the_key_keeps_closed_regions_of_the_background_colour() -> None:
    """White outside a ring is background; the white inside it (like an eye's) is not."""
    img = Image.new("RGB", (48, 48), (255, 255, 255))
    ImageDraw.Draw(img).ellipse([8, 8, 40, 40], outline=(20, 20, 20), width=4)
    a = key_alpha(img, (255, 255, 255))
    assert a[0, 0] == 0 and a[24, 24] == 1 and a[24, 9] == 1


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("kind", ["gif", "apng", "webp"])
def test_animations_hold_every_frame_even_identical_ones(kind: str, face: Path) -> None:
    still = Image.open(face).convert("RGBA")
    other = still.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    frames = [still, still, still, other, still.copy(), still.copy()]
    data = animation_bytes(frames, kind, fps=10)
    assert frame_count(data) == 6
    clear, solid = regions(face)
    with Image.open(io.BytesIO(data)) as anim:
        for i in range(6):
            anim.seek(i)
            shown = anim.convert("RGBA")
            assert_cut_out(shown, clear if i != 3 else clear[:, ::-1], solid if i != 3 else solid[:, ::-1])
            if kind != "gif":   # a GIF has 255 colours; APNG and WebP are lossless
                diff = np.abs(np.asarray(shown, int) - np.asarray(frames[i], int))[solid if i != 3 else solid[:, ::-1]]
                assert diff.max() <= 1
    assert frame_count(animation_bytes([still.convert("RGB")] * 5, kind)) == 5


def test_a_sprite_sheet_and_its_json() -> None:
    cells = [Image.new("RGBA", (10, 12), (i * 30, 0, 0, 255)) for i in range(7)]
    sheet, layout = sprite_sheet(cells, list(EXPRESSIONS), columns=3, image_name="s.png", source="a.png")
    assert sheet.size == (30, 36) and sheet.mode == "RGBA"
    assert [f["filename"] for f in layout["frames"]] == list(EXPRESSIONS) == layout["meta"]["order"]
    for i, f in enumerate(layout["frames"]):
        box = f["frame"]
        assert (box["x"], box["y"], box["w"], box["h"]) == ((i % 3) * 10, (i // 3) * 12, 10, 12)
        assert sheet.getpixel((box["x"] + 5, box["y"] + 6)) == (i * 30, 0, 0, 255)
    assert sheet.getpixel((25, 30)) == (0, 0, 0, 0)        # the empty cells are transparent
    meta = layout["meta"]
    assert meta["size"] == {"w": 30, "h": 36} and meta["columns"] == 3 and meta["rows"] == 3
    assert meta["image"] == "s.png" and meta["source"] == "a.png" and meta["cell"] == {"w": 10, "h": 12}


# ----------------------------------------------------------------------------- commands
def test_a_folder_of_50_faces_to_sprite_sheets(tiny_model: Path, tmp_path: Path) -> None:
    """50 faces (two of them huge.png and huge.jpg) and one unreadable file: 50 sheets and 50 JSON, a
    progress bar, one line naming the bad file, exit status 1 (some input was skipped)."""
    folder = tmp_path / "faces"
    folder.mkdir()
    characters = toon.make_characters(49)
    for i, character in enumerate(characters):
        toon.render_face(character, "neutral", size=SIDE).save(folder / ("huge.png" if i == 0 else f"face_{i:02d}.png"))
    toon.render_face(characters[1], "neutral", size=SIDE).convert("RGB").save(folder / "huge.jpg")
    (folder / "broken.png").write_bytes(b"not a png at all")
    r = run("transfer", tiny_model, folder, "--to", "all", "--format", "sheet", "--size", SIDE, "--out", tmp_path / "out")
    assert r.returncode == 1, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "upscaled from the model's 32 px to 128 px" in warnings[1]
    assert warnings[0].startswith(f"warning: skipped {folder / 'broken.png'}: cannot read")
    assert "51/51" in r.stderr and "skipped 1 unreadable input" in r.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 100 and {"huge_png_sheet.png", "huge_jpg_sheet.png", "huge_png_sheet.json"} <= set(written)
    clear, solid = regions(folder / "huge.png")
    layout = json.loads((tmp_path / "out" / "huge_png_sheet.json").read_text())
    assert layout["meta"]["order"] == list(EXPRESSIONS) and layout["meta"]["source"] == "huge.png"
    sheet = Image.open(tmp_path / "out" / "huge_png_sheet.png")
    assert sheet.size == (7 * SIDE, SIDE) == (layout["meta"]["size"]["w"], layout["meta"]["size"]["h"])
    for cell in layout["frames"]:
        x = cell["frame"]["x"]
        assert_cut_out(sheet.crop((x, 0, x + SIDE, SIDE)), clear, solid)
    assert Image.open(tmp_path / "out" / "huge_jpg_sheet.png").mode == "RGB"     # no alpha in, none out


def test_every_command_keeps_transparency_and_morph_writes_every_frame(tiny_model: Path, face: Path,
                                                                       tmp_path: Path) -> None:
    clear, solid = regions(face)
    r = run("transfer", tiny_model, face, "--to", "joy", "--to", "anger=0.5,sadness=0.5", "--size", SIDE,
            "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["ada_anger0.5+sadness0.5.png", "ada_joy.png"]
    for p in (tmp_path / "t").iterdir():
        assert_cut_out(Image.open(p), clear, solid)
    assert "upscaled from the model's 32 px to 128 px" in r.stderr
    r = run("mix", tiny_model, face, "--affect", "fear=0.5,surprise=0.5", "--size", SIDE, "--out", tmp_path / "m.png")
    assert r.returncode == 0, r.stderr
    assert_cut_out(Image.open(tmp_path / "m.png"), clear, solid)
    for name in ("m.gif", "m.png", "m.webp"):   # joy to joy: every frame the same picture
        r = run("morph", tiny_model, face, "--from", "joy", "--to", "joy", "--frames", 8, "--size", SIDE,
                "--out", tmp_path / "morph" / name)
        assert r.returncode == 0 and "(8 frames each, read back)" in r.stderr, r.stderr
        with Image.open(tmp_path / "morph" / name) as anim:
            assert anim.n_frames == 8
            anim.seek(7)
            assert_cut_out(anim.convert("RGBA"), clear, solid)
    r = run("morph", tiny_model, face, "--to", "joy", "--frames", 5, "--format", "frames", "--out", tmp_path / "f")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "f" / "ada_frames").iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]
    # the decoder alone, keyed out of its background colour (the shipped model: the tiny one's
    # background is not near white, so its key is opaque there, as docs/generation.md says)
    r = run("sample", "toon-128", "--expression", "joy", "--n", 3, "--format", "sheet", "--matte", "key",
            "--device", "cpu", "--out", tmp_path / "s.png")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["meta"]["order"] == ["joy_0", "joy_1", "joy_2"]
    keyed = alpha(Image.open(tmp_path / "s.png"))
    assert keyed.shape == (128, 3 * 128) and keyed[:4].max() == 0 and keyed[64, 64::128].min() == 255


def test_folders_for_mix_and_morph(tiny_model: Path, face: Path, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.open(face).save(folder / "ada.png")
    Image.open(face).convert("RGB").save(folder / "plain.jpg")
    r = run("mix", tiny_model, folder, "--affect", "joy=0.5,surprise=0.5", "--format", "webp", "--affect", "anger",
            "--out", tmp_path / "mix")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "mix").iterdir()) == ["ada.webp", "plain.webp"]
    assert frame_count((tmp_path / "mix" / "ada.webp").read_bytes()) == 2
    r = run("morph", tiny_model, folder, "--to", "joy", "--frames", 3, "--format", "sheet", "--out", tmp_path / "mo")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "mo").iterdir()) == [
        "ada_sheet.json", "ada_sheet.png", "plain_sheet.json", "plain_sheet.png"]
    assert Image.open(tmp_path / "mo" / "ada_sheet.png").size == (3 * 32, 32)



def test_a_rendered_tree_is_transferred_into_a_mirrored_tree(tiny_model: Path, face: Path, tmp_path: Path) -> None:
    """Folders are searched at any depth (as `data render` lays faces out), GIF and TIFF included, and
    the outputs take the same places below --out."""
    tree = tmp_path / "faces"
    for who, kind in (("ada", "png"), ("bo", "gif"), ("cleo", "tiff")):
        (tree / who / "neutral").mkdir(parents=True)
        Image.open(face).convert("RGB").save(tree / who / "neutral" / f"0000.{kind}")
    (tree / ".cache").mkdir()
    Image.open(face).save(tree / ".cache" / "hidden.png")  # hidden folders are not inputs
    r = run("transfer", tiny_model, tree, "--to", "joy", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["ada/neutral/0000_joy.png", "bo/neutral/0000_joy.png", "cleo/neutral/0000_joy.png"]
    r = run("transfer", tiny_model, tree / "bo" / "neutral" / "0000.gif", "--to", "joy", "--out", tmp_path / "one")
    assert r.returncode == 0 and (tmp_path / "one" / "0000_joy.png").is_file(), r.stderr

BAD = [
    (["transfer", "{model}", "{face}", "--to", "joy", "--out", "{tmp}/t5.png"], "looks like a file"),
    (["transfer", "{model}", "{face}", "--to", "joy,anger", "--out", "{tmp}/o"], "--to joy --to anger"),
    (["transfer", "{model}", "{face}", "--to", "joy", "--size", "5", "--out", "{tmp}/o"], "size must be between 16"),
    (["transfer", "{model}", "{face}", "--to", "joy", "--size", "64", "--keep-size", "--out", "{tmp}/o"], "not both"),
    (["transfer", "{model}", "{face}", "--to", "joy", "--format", "mp4", "--out", "{tmp}/o"], "not 'mp4'"),
    (["transfer", "{model}", "{face}", "{twin}", "--to", "joy", "--out", "{dir}"], "would overwrite the input"),
    (["mix", "{model}", "{face}", "--affect", "joy=-3", "--out", "{tmp}/m.png"], "joy=-3 is negative"),
    (["mix", "{model}", "{face}", "--affect", "joy=0", "--out", "{tmp}/m.png"], "no weight above 0"),
    (["mix", "{model}", "{face}", "{twin}", "--affect", "joy", "--out", "{tmp}/m.png"], "is one file, but there are 2"),
    (["mix", "{model}", "{face}", "--affect", "joy", "--affect", "anger", "--format", "png", "--out", "{tmp}/m.png"],
     "do not fit one file"),
    (["mix", "{model}", "{face}", "--affect", "joy", "--device", "gpu", "--out", "{tmp}/m.png"], "device 'gpu'"),
    (["morph", "{model}", "{face}", "--to", "joy", "--device", "gpu", "--out", "{tmp}/m.gif"], "device 'gpu'"),
    (["morph", "{model}", "{face}", "--to", "joy", "--format", "gif", "--out", "{tmp}/m.webp"], "does not fit --format gif"),
    (["morph", "{model}", "{face}", "--to", "joy", "--matte", "green", "--out", "{tmp}/m.gif"], "unknown matte"),
    (["sample", "{model}", "--matte", "input", "--out", "{tmp}/s.png"], "no input silhouette"),
    (["sample", "{model}", "--out", "{tmp}/samples"], "looks like a folder"),
    (["sample", "{model}", "--format", "png", "--out", "{tmp}/s.png"], "looks like a file"),
]


def test_arguments_that_cannot_be_right_are_one_line_and_write_nothing(tiny_model: Path, face: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real entry point `fexgan.cli.main.main` in this process (the first also as a `fexgan` process)."""
    from fexgan.cli.main import main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.open(face).save(inputs / "ada.png")
    Image.open(face).save(inputs / "ada_joy.png")   # what `--to joy` of ada.png would be called
    out = tmp_path / "out"
    out.mkdir()
    fill = {"model": tiny_model, "face": inputs / "ada.png", "twin": inputs / "ada_joy.png", "dir": inputs, "tmp": out}
    before = sorted(inputs.iterdir())
    for i, (args, message) in enumerate(BAD):
        argv = [a.format(**fill) for a in args]
        if i == 0:
            r = run(*argv)
            code, err = r.returncode, r.stderr
        else:
            monkeypatch.setattr(sys, "argv", ["fexgan", *argv])
            with pytest.raises(SystemExit) as exit_info:
                main()
            code, err = exit_info.value.code, capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (argv, err)
        assert list(out.iterdir()) == [] and sorted(inputs.iterdir()) == before, argv
