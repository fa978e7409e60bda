"""The web page at / (Gradio): upload a face or pick a toon character, see it turned to all seven
expressions, mix expressions with seven sliders, draw a random face from the decoder, download a
sprite sheet of every expression, make a morph (GIF, APNG or WebP) at a chosen size. A transparent
face gives transparent downloads. Every model call runs in Gradio's queue (the engine's limits) and
through the engine's gate. Nothing is fetched from the internet: analytics are off, and the page's
scripts and fonts are local.
"""
from __future__ import annotations

import functools
import html
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from PIL import Image

from fexgan.errors import UserError, one_line
from fexgan.expressions import MIXED_PAIRS
from fexgan.generation.animation import (
    ANIMATIONS,
    MEDIA_TYPES,
    animation_bytes,
    png_bytes,
    sprite_sheet,
)
from fexgan.generation.figures import figure_cells
from fexgan.generation.inference import RECOGNISED
from fexgan.grids import image_grid
from fexgan.serve.api import b64
from fexgan.serve.engine import MB, Engine, Face, RequestError, Task
from fexgan.serve.guard import inside

if TYPE_CHECKING:
    import gradio as gr

SHOWN = 256             # the page shows faces at least this large
CSS = ".morph { width: 320px; } .sheet { max-width: 100%; }"


def gradio() -> ModuleType:
    """Gradio, imported on first use with its analytics off (it reads the setting when imported:
    no telemetry, no version check), unless the user's environment says otherwise."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    return gr


def describe(info: dict[str, Any]) -> str:
    """The page's header: model name, size and training summary in two lines of Markdown."""
    c, s, p = info["config"], info["summary"], info["parameters"]
    size = f"{info['bytes'] / MB:.1f} MB file · " if info["bytes"] else ""
    parts = [f"{size}{sum(p.values()) / 1e6:.2f} M parameters",
             f"{c['image_size']} px, width {c['width']:g}, latent {c['latent_dim']}"]
    if s.get("steps"):
        how = ", ".join(x for x in (f"{s['epochs']:g} epochs" if "epochs" in s else "",
                                    f"{s['minutes']:g} min" if "minutes" in s else "",
                                    f"on {s['device']}" if "device" in s else "") if x)
        data = f" on `{s['data']}`" if "data" in s else ""
        if "images" in s:
            data += f" ({s['images']:,} images, {len(s.get('identities', []))} identities)"
        parts.append(f"trained {s['steps']:,} steps ({how}){data}")
    else:
        parts.append("no training summary in this file")
    return (f"## FExGAN · {html.escape(info['name'])}\n{' · '.join(parts)}. "
            f"Expressions: {', '.join(info['classes'])}. HTTP API: `/api`.")


def enlarge(image: Image.Image, side: int = SHOWN) -> Image.Image:
    """A face scaled up for the page (the model's 32-128 px look tiny on a screen)."""
    return image if image.width >= side else image.resize((side, side), Image.Resampling.LANCZOS)


def size_choices(model_size: int, max_size: int) -> dict[str, int | None]:
    """The page's output sizes: the model's own, then larger ones (saying that they are upscaled)."""
    choices: dict[str, int | None] = {f"{model_size} px (the model's)": None}
    for side in (256, 512, 1024):
        if model_size < side <= max_size:
            choices[f"{side} px (upscaled)"] = side
    return choices


def download(data: bytes, mime: str, name: str) -> str:
    """An HTML link that downloads `data` as the file `name`."""
    return f'<a href="data:{mime};base64,{b64(data)}" download="{html.escape(name)}">Download {html.escape(name)}</a>'


def in_page(fn: Callable) -> Callable:
    """User mistakes (and a busy server) become a message in the page, not a stack trace."""
    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except UserError as err:
            raise gradio().Error(html.escape(one_line(str(err))), print_exception=False) from None
    return wrapped


def received(payload: dict, folder: Path, limit: int) -> bytes:
    """The bytes of a file the page's upload route received: the path in `payload` must name a file in
    `folder` (the server's own upload folder, symbolic links resolved); a client cannot name another."""
    path = os.path.realpath(str(payload.get("path", "")))
    if not inside(path, os.path.realpath(folder)) or not os.path.isfile(path):
        raise RequestError("this server did not receive that file; upload the image again")
    with open(path, "rb") as f:
        return f.read(limit + 1)  # enough to tell that a file is too large


class Page:
    """What the page does when a face, a slider or a button changes (the layout is `build_page`'s).
    Each handler is one `Engine.job`, so the page and the API share the server's limits."""

    def __init__(self, engine: Engine, uploads: Path):
        self.engine, self.classes, self.uploads = engine, engine.model.classes, uploads
        self.sizes = size_choices(engine.model.config.image_size, engine.limits.max_size)

    def strip(self, face: Face) -> Image.Image:
        images, labels = self.engine.transfer(face, "all")
        return image_grid([figure_cells([face.image, *images])], col_labels=["input", *labels],
                          background=self.engine.model.config.background)

    def mixed(self, face: Face, weights: Sequence[float]) -> Image.Image:
        return enlarge(self.engine.mix(face, dict(zip(self.classes, map(float, weights)))))

    def show(self, face: Face, weights: Sequence[float]) -> tuple:
        """Everything that changes with the face: state, classifier reading, strip, mix."""
        return face, face.probabilities, self.strip(face), self.mixed(face, weights)

    def shown(self, task: Task, weights: Sequence[float]) -> tuple:
        """The face of `task` and everything shown with it (the strip's faces and the mix: 8 outputs)."""
        with self.engine.job(replace(task, outputs=len(self.classes) + 1)) as face:
            return self.show(face, weights)

    @in_page
    def on_upload(self, payload: dict | None, *weights: float) -> tuple:
        if not payload or not payload.get("path"):
            return (gradio().skip(),) * 5
        data = received(payload, self.uploads, self.engine.limits.max_upload_bytes)
        shown = self.shown(Task(upload=data), weights)
        face = shown[0]
        if face.far:
            unread = face.recognised is not None and face.recognised < RECOGNISED
            why = (f"its own classifier is {face.recognised:.0%} sure of its edits of it" if unread
                   else f"its decoder cannot redraw it: distance {face.distance:.2f}")
            gradio().Warning(f"This face is far from the characters the model knows ({why}): the expressions may "
                             f"look off. `fexgan finetune` adapts the model to a new character from one image.")
        return (None, *shown)

    @in_page
    def on_character(self, name: str, *weights: float) -> tuple:
        shown = self.shown(Task(character=name), weights)
        return (enlarge(shown[0].image), *shown)

    @in_page
    def on_random(self, *weights: float) -> tuple:
        seed = random.randrange(2**31)
        with self.engine.job(Task(len(self.classes) + 2), needs_face=False):
            face = self.engine.random_face(seed)
            shown = self.show(face, weights)
        gradio().Info(f"random face, seed {seed}")
        return (enlarge(face.image), None, *shown)

    def mix_job(self, face: Face | None, weights: Sequence[float]) -> Any:
        if face is None:
            return gradio().skip()
        with self.engine.job(Task(1), needs_face=False):
            return self.mixed(face, weights)

    @in_page
    def on_slider(self, face: Face | None, *weights: float) -> Any:
        return self.mix_job(face, weights)

    def preset(self, weights: dict[str, float]) -> Callable:
        @in_page
        def apply(face: Face | None) -> tuple:
            values = [weights.get(c, 0.0) for c in self.classes]
            return (*values, self.mix_job(face, values))
        return apply

    @in_page
    def on_sheet(self, face: Face | None, size: str) -> str:
        """A sprite sheet of every expression at the chosen size, with its layout JSON, to download."""
        if face is None:
            raise RequestError("choose a face first")
        with self.engine.job(Task(len(self.classes), self.sizes[size]), needs_face=False):
            images, labels = self.engine.transfer(face, "all", self.sizes[size])
            sheet, layout = sprite_sheet(images, labels, image_name="expressions_sheet.png", source=face.source)
            data = png_bytes(sheet)
            return (f'<img src="data:image/png;base64,{b64(data)}" alt="sprite sheet" class="sheet" />'
                    f'<p>{download(data, "image/png", "expressions_sheet.png")} · '
                    f'{download(json.dumps(layout, indent=1).encode(), "application/json", "expressions_sheet.json")}</p>')

    @in_page
    def on_morph(self, face: Face | None, start: str, end: str, frames: float, fps: float, loop: bool,
                 kind: str, size: str) -> str:
        if face is None:
            raise RequestError("choose a face first on the Expressions tab")
        count = self.engine.check_frames(int(frames))
        with self.engine.job(Task(count, self.sizes[size]), needs_face=False):
            clip = self.engine.morph(face, [start, end], count, loop, self.sizes[size])
            data = animation_bytes(clip, kind, fps)
            name = f"morph_{start}_{end}.{'png' if kind == 'apng' else kind}"
            return (f'<img src="data:{MEDIA_TYPES[kind]};base64,{b64(data)}" alt="morph {start} to {end}" '
                    f'class="morph" /><p>{download(data, MEDIA_TYPES[kind], name)} ({len(clip)} frames)</p>')


def build_page(engine: Engine, uploads: Path) -> gr.Blocks:
    """The Gradio Blocks page; every model call runs in Gradio's queue and through the engine's gate.
    `uploads` is the folder Gradio's upload route writes to (the only files the page opens)."""
    gr = gradio()
    classes, neutral, info, handlers = engine.model.classes, engine.neutral, engine.info(), Page(engine, uploads)
    queued = {"concurrency_id": "model", "concurrency_limit": engine.limits.workers, "api_visibility": "private"}
    default_mix = {c: (1.0 if c == "joy" else 0.0) for c in classes}
    if "joy" not in classes:
        default_mix[classes[0]] = 1.0
    with gr.Blocks(title=f"fexgan · {info['name']}", analytics_enabled=False, delete_cache=(60, 300)) as page:
        face = gr.State(None)
        gr.Markdown(describe(info))
        with gr.Tab("Expressions"):
            with gr.Row():
                with gr.Column():
                    upload = gr.Image(label="Your face: upload, drop or paste", type="filepath",
                                      sources=["upload", "clipboard"], height=SHOWN, elem_id="face")
                    character = gr.Radio(list(engine.characters), value=next(iter(engine.characters)),
                                         label="…or a toon character", elem_id="character")
                    random_button = gr.Button("Random face (drawn by the decoder)", elem_id="random")
                    reading = gr.Label(label="The model reads this face as", num_top_classes=3,
                                       visible=engine.model.discriminator is not None)
                with gr.Column():
                    mix_image = gr.Image(label="Mixed expression", format="png", interactive=False, height=SHOWN,
                                         elem_id="mix")
                    sliders = [gr.Slider(0, 1, value=default_mix[c], step=0.05, label=c, elem_id=f"slider-{c}")
                               for c in classes]
                    with gr.Row():
                        pairs = [(a, b) for a, b in MIXED_PAIRS if a in classes and b in classes]
                        buttons = {f"{a} + {b}": {a: 0.5, b: 0.5} for a, b in pairs}
                        buttons["reset"] = default_mix
                        preset_buttons = {label: gr.Button(label, size="sm") for label in buttons}
            strip_image = gr.Image(label="All expressions", format="png", interactive=False, elem_id="strip")
            with gr.Row():
                sheet_size = gr.Dropdown(list(handlers.sizes), value=next(iter(handlers.sizes)), label="size")
                make_sheet = gr.Button("Sprite sheet of every expression (PNG + JSON)", elem_id="make-sheet")
            sheet = gr.HTML(elem_id="sheet")
        with gr.Tab("Morph"):
            gr.Markdown("An animation of the face chosen on the Expressions tab, from one expression to another "
                        "(every frame kept; a transparent face stays transparent).")
            with gr.Row():
                start = gr.Dropdown(list(classes), value=neutral, label="from")
                end = gr.Dropdown(list(classes), value="joy" if "joy" in classes else classes[-1], label="to")
                frames = gr.Slider(4, engine.limits.max_frames, value=24, step=1, label="frames")
                fps = gr.Slider(2, 30, value=12, step=1, label="frames per second")
                loop = gr.Checkbox(value=True, label="loop back to the start")
                kind = gr.Dropdown(list(ANIMATIONS), value="gif", label="file", elem_id="morph-kind")
                morph_size = gr.Dropdown(list(handlers.sizes), value=next(iter(handlers.sizes)), label="size")
            make = gr.Button("Make animation", variant="primary", elem_id="make-gif")
            gif = gr.HTML(elem_id="gif")

        shown = [face, reading, strip_image, mix_image]
        # preprocess=False: the upload arrives as Gradio's file record, so the engine checks and
        # decodes the file itself (a clear message for non-images and huge images); `received`
        # opens it only from the server's upload folder
        upload.upload(handlers.on_upload, [upload, *sliders], [character, *shown], preprocess=False, **queued)
        character.input(handlers.on_character, [character, *sliders], [upload, *shown], **queued)
        page.load(handlers.on_character, [character, *sliders], [upload, *shown], **queued)
        random_button.click(handlers.on_random, sliders, [upload, character, *shown], **queued)
        gr.on([s.input for s in sliders], handlers.on_slider, [face, *sliders], mix_image, trigger_mode="always_last",
              show_progress="hidden", **queued)
        for label, button in preset_buttons.items():
            button.click(handlers.preset(buttons[label]), face, [*sliders, mix_image], **queued)
        make_sheet.click(handlers.on_sheet, [face, sheet_size], sheet, **queued)
        make.click(handlers.on_morph, [face, start, end, frames, fps, loop, kind, morph_size], gif, **queued)
    page.queue(max_size=engine.limits.max_waiting, default_concurrency_limit=engine.limits.workers)
    return page
