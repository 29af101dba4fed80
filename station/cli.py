"""The `station` command: one sub-command per job a person does.

Heavy modules (TensorFlow in particular) are imported inside the commands
that need them, so `station run` starts fast and never loads TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from station.calibrate.commands import calibrate
from station.heap import retain_freed_memory
from station.models import DEFAULT_MODEL_DIR
from station.training.config import TrainConfig

if TYPE_CHECKING:
    from station.classifier.model_card import ModelCard

log = logging.getLogger("station")
TRAIN_DEFAULTS = TrainConfig()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="station")
def main(verbose: bool) -> None:
    """Reject station for cast pump impellers."""
    _setup_logging(verbose)
    if not retain_freed_memory():
        log.debug("not glibc: freed memory goes back to the kernel; each part faults it in again")


@main.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder holding def_front/ and ok_front/.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write the model, model card and plots to.",
)
@click.option(
    "--input-size",
    default=TRAIN_DEFAULTS.input_size,
    show_default=True,
    help="Side of the model input.",
)
@click.option(
    "--width", default=TRAIN_DEFAULTS.width, show_default=True, help="Channels of the first stage."
)
@click.option(
    "--epochs",
    default=TRAIN_DEFAULTS.epochs,
    show_default=True,
    help="Length of the learning-rate schedule; stops early if validation loss stalls.",
)
@click.option("--batch-size", default=TRAIN_DEFAULTS.batch_size, show_default=True)
@click.option(
    "--learning-rate",
    default=TRAIN_DEFAULTS.learning_rate,
    show_default=True,
    help="Peak Adam learning rate: warm-up for 2 epochs, then cosine decay to 1% of it.",
)
@click.option(
    "--patience",
    default=TRAIN_DEFAULTS.patience,
    show_default=True,
    help="Early-stopping patience, counted from two thirds of --epochs: the kept weights "
    "are those of the lowest validation loss in the last third.",
)
@click.option("--val-fraction", default=TRAIN_DEFAULTS.val_fraction, show_default=True)
@click.option(
    "--val-split",
    default=TRAIN_DEFAULTS.val_split,
    show_default=True,
    type=click.Choice(["signature", "casting"]),
    help="What the validation split keeps whole: near-duplicate groups, or physical "
    "castings (the epoch and threshold then chosen on castings the network never saw).",
)
@click.option("--seed", default=TRAIN_DEFAULTS.seed, show_default=True)
@click.option(
    "--casting-mix",
    default=TRAIN_DEFAULTS.casting_mix,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Share of training frames given a wedge of another good frame (good ones) or of "
    "themselves (defective ones), so the network cannot learn the few good castings by "
    "heart; 0 for none.",
)
@click.option(
    "--views",
    default=TRAIN_DEFAULTS.views,
    show_default=True,
    type=click.IntRange(1, 2),
    help="Test-time views: 2 averages the image and its mirror image.",
)
@click.option(
    "--image-size",
    default=TRAIN_DEFAULTS.image_size,
    show_default=True,
    help="Expected side of the training images; others are skipped.",
)
@click.option(
    "--min-accuracy",
    default=TRAIN_DEFAULTS.min_accuracy,
    show_default=True,
    help="Quality gate: held-out accuracy at the model's threshold.",
)
@click.option(
    "--max-escape-rate",
    default=TRAIN_DEFAULTS.max_escape_rate,
    show_default=True,
    help="Quality gate: missed defects per held-out defective image.",
)
@click.option(
    "--label-review",
    default=TRAIN_DEFAULTS.label_review,
    help="Reviewed images (station/training/label_review.yaml): doubted labels are left out, "
    "named and counted; '' for none.",
)
@click.option(
    "--folds",
    default=0,
    type=click.IntRange(min=0),
    help="K >= 2: grouped K-fold cross-validation instead (an out-of-fold score for every "
    "image; resumable: rerun with the same --out to pick up where it stopped).",
)
@click.option(
    "--attach-to",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="With --folds: write the out-of-fold figures into this model's card (its recipe "
    "must be the one cross-validated), e.g. station/models/default.",
)
@click.option(
    "--compare-to",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_MODEL_DIR,
    show_default=True,
    help="At the end, say whether the new model.tflite is this model's, byte for byte, and "
    "if not which recorded setting, photos, CPU or library differs.",
)
def train(
    data_dir: Path,
    out_dir: Path,
    folds: int,
    attach_to: Path | None,
    compare_to: Path,
    **options,
) -> None:
    """Train ImpellerNet (on pinned kernels: the same model again on the same kind of CPU
    and the same libraries; another CPU gives another network), export it to TFLite and
    write its model card."""
    from station.dataset import DatasetError
    from station.training.label_review import LabelReviewError
    from station.training.reproduction import reproduction_report
    from station.training.trainer import train as run_training

    if folds == 1:
        raise click.BadParameter("1 fold holds nothing out; give 2 or more", param_hint="--folds")
    if attach_to and not folds:
        raise click.BadParameter("needs --folds", param_hint="--attach-to")
    try:
        if folds:
            _cross_validate(data_dir, out_dir, TrainConfig(**options), folds, attach_to)
            return
        # Read first: a run that writes over the reference is compared with what it replaced.
        reference = _reference_card(compare_to)
        card = run_training(data_dir, out_dir, TrainConfig(**options))
    except (DatasetError, LabelReviewError) as exc:
        raise click.ClickException(str(exc)) from None
    v = card.validation
    click.echo(
        f"validation: n={v.n} accuracy={v.accuracy:.4f} missed_defects={v.missed_defects} "
        f"false_rejects={v.false_rejects} threshold={card.threshold:.4f}\n"
        f"model written to {out_dir}; quality gate: {card.status}"
    )
    if isinstance(reference, str):
        click.echo(f"not compared with {compare_to}: {reference}")
    else:
        click.echo(reproduction_report(card, reference, str(compare_to)))
    if card.status != "passed":
        raise click.ClickException(
            f"{out_dir}: {card.status}. The card is marked so; the station refuses to load it."
        )


def _reference_card(model_dir: Path) -> ModelCard | str:
    """The card `station train` compares its model with, or why there is none to read."""
    from station.classifier import model_card

    try:
        return model_card.ModelCard.load(model_dir / model_card.MODEL_CARD_NAME)
    except model_card.ModelCardError as exc:
        return str(exc)


@main.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default=True,
    help="Model folder (model.tflite + model_card.json).",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder holding def_front/ and ok_front/.",
)
@click.option("--threshold", type=float, default=None, help="Override the card's threshold.")
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the plots, scores.csv and the escapes/ and false_rejects/ images "
    "(default: ./evaluation).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(
    model_dir: Path, data_dir: Path, threshold: float | None, plots_dir: Path | None, as_json: bool
) -> None:
    """Figures of a model on a labelled folder, at the model's threshold."""
    from station.classifier.litert_classifier import ModelLoadError
    from station.dataset import BadImage, DatasetError
    from station.evaluation import evaluate as run_evaluation

    try:
        report = run_evaluation(model_dir, data_dir, threshold, plots_dir or Path("evaluation"))
    except (DatasetError, ModelLoadError, BadImage) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(report.as_text())


@main.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default=True,
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder with ok_front/: the model's held-out OK photos are taken from it "
    "(validation_scores.csv), or all of them if it lists none there.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="Where to write pit_sensitivity.png.",
)
@click.option(
    "--darkness",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=None,
    help="The pit's centre as a fraction of the metal's brightness [default: the card's "
    "0.3]; the pinholes the model misses in the training photos are near 0.86 "
    "(tools/pinhole_contrast.py).",
)
@click.option(
    "--write-card", is_flag=True, help="Also record the table in the model's model_card.json."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sensitivity(
    model_dir: Path,
    data_dir: Path,
    out_dir: Path,
    darkness: float | None,
    write_card: bool,
    as_json: bool,
):
    """Detection rate of synthetic dark pits (2 to 8 px) on held-out OK photos."""
    from station import plots
    from station.classifier.litert_classifier import Classifier, ModelLoadError
    from station.classifier.model_card import MODEL_CARD_NAME
    from station.dataset import BadImage, load_grey
    from station.sensitivity import PIT_DARKNESS, held_out_ok_images, pit_sensitivity

    try:
        classifier = Classifier(model_dir)
        paths = held_out_ok_images(model_dir, data_dir)
        images = [load_grey(p) for p in paths]
        result = pit_sensitivity(
            classifier.score,
            images,
            classifier.threshold,
            darkness=PIT_DARKNESS if darkness is None else darkness,
        )
    except (ModelLoadError, BadImage, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / "pit_sensitivity.png"
    plots.pit_sensitivity(result, classifier.version, plot)
    if write_card:
        card = classifier.card.model_copy(update={"pit_sensitivity": result.card_entry()})
        card.save(Path(model_dir) / MODEL_CARD_NAME)
    summary = {**result.card_entry(), "threshold": result.threshold, "plot": str(plot)}
    _print_summary(summary, as_json)


@main.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default=True,
)
@click.option("--runs", default=1000, show_default=True, help="Timed single-image runs per model.")
@click.option(
    "--photo",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Part photo the whole decision is timed on [default: a sample OK photo in tests/data].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench(model_dir: Path, runs: int, photo: Path | None, as_json: bool) -> None:
    """Latency (p50/p99, one thread) and throughput of the shipped model and the baselines."""
    from station.training.bench import SAMPLE_PHOTO, run_bench

    try:
        table = run_bench(model_dir, runs, photo or SAMPLE_PHOTO)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(table.as_dict()))
    else:
        click.echo(table.as_text())


@main.command("sim-mega")
@click.option(
    "--link",
    "link_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also make this symlink to the pty (a stable name, like the udev rule's).",
)
@click.option(
    "--part-every",
    type=float,
    default=0.0,
    help="Seconds between simulated photo-eye triggers (0: none).",
)
def sim_mega(link_path: Path | None, part_every: float) -> None:
    """Run a simulated Mega on a pseudo-terminal and print the port to open."""
    import signal
    import threading

    from station.sim.mega_pty import SimulatedMega

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimulatedMega(link_path=link_path) as mega:
        click.echo(f"port: {mega.port}", nl=True)
        sys.stdout.flush()
        try:
            while not stop.wait(part_every if part_every > 0 else 0.5):
                if part_every > 0:
                    log.info("photo-eye: part %d", mega.photo_eye())
        except KeyboardInterrupt:
            pass


@main.command("link-bench")
@click.option("--round-trips", default=2000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def link_bench(round_trips: int, as_json: bool) -> None:
    """Verdict-to-ack round trip over a pty (p50/p99) and codec frames per second."""
    from station.sim.link_bench import run_link_bench

    result = run_link_bench(round_trips)
    click.echo(json.dumps(result.as_dict()) if as_json else result.as_text())


REPO_CALIBRATION = Path(__file__).resolve().parent.parent / "calibration"
VIRTUAL_LINE_CONFIG = REPO_CALIBRATION / "virtual-line.station.yaml"


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Station configuration (YAML). With --virtual-line: "
    "calibration/virtual-line.station.yaml.",
)
@click.option(
    "--virtual-line", is_flag=True, help="Run against the virtual conveyor and a simulated Mega."
)
@click.option("--parts", default=60, show_default=True, help="Virtual line: parts to run.")
@click.option(
    "--parts-from",
    type=click.Path(path_type=Path),
    default=None,
    help="Virtual line: labelled image folder (def_front/, ok_front/) to draw parts from.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    help="Virtual line: inject KIND@SECONDS[:DURATION]; KIND is camera-stall, unplug, "
    "classifier-stall, mega-reset or eye-miss (the photo-eye misses the next part). Repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Virtual line: folder for the audit database, images and parts.csv "
    "(default runs/virtual-line-<time>).",
)
@click.option(
    "--record",
    "record_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep each judged frame with its metadata in this folder, for `station replay` "
    "(overrides the configuration's record.directory; layout in station/recording.py).",
)
@click.option(
    "--web",
    "web_listen",
    default=None,
    metavar="ADDR",
    help="Serve the operator's page on HOST:PORT (overrides web.listen). On the virtual "
    "line, actions use a token written to OUT/web-token unless web.token_file is set.",
)
@click.option(
    "--vision-line",
    is_flag=True,
    help="Virtual line: no photo-eye, the camera triggers (also: trigger: vision in the file).",
)
@click.option("--json", "as_json", is_flag=True, help="Virtual line: print one JSON summary.")
def run(
    config_path: Path | None,
    virtual_line: bool,
    parts: int,
    parts_from: Path | None,
    faults: tuple[str, ...],
    out_dir: Path | None,
    record_dir: Path | None,
    web_listen: str | None,
    vision_line: bool,
    as_json: bool,
) -> None:
    """Run the line: camera, classifier, Mega. Under systemd this is the service."""
    from station.config import ConfigError, RecordConfig, load_station_config

    if not virtual_line and config_path is None:
        raise click.UsageError("give --config FILE, or --virtual-line")
    if vision_line and not virtual_line:
        raise click.UsageError("--vision-line is for --virtual-line (a real line: trigger: vision)")
    try:
        config, calibration = load_station_config(config_path or VIRTUAL_LINE_CONFIG)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if record_dir is not None:
        quota = (
            config.record.quota_mb
            if config.record
            else RecordConfig.model_fields["quota_mb"].default
        )
        record = RecordConfig(directory=record_dir.resolve(), quota_mb=quota)
        config = config.model_copy(update={"record": record})
    if web_listen is not None:
        config = config.model_copy(
            update={"web": config.web.model_copy(update={"listen": web_listen})}
        )
    if virtual_line:
        config = _virtual_vision_line(config, vision_line)
        _run_virtual_line(config, calibration, parts, parts_from, faults, out_dir, as_json)
        return
    from station.classifier.litert_classifier import ModelLoadError
    from station.recording import RecordingError
    from station.service.assembly import StartupError, run_service

    try:
        run_service(config, calibration)
    except (StartupError, ModelLoadError, RecordingError) as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Station configuration whose calibration, model and vision trigger the replay uses "
    "(default: calibration/virtual-line.station.yaml).",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Model A (default: the configuration's model).",
)
@click.option("--threshold", type=float, default=None, help="Model A's threshold, to try.")
@click.option(
    "--against",
    "against_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Model B: what would change if it replaced model A.",
)
@click.option("--against-threshold", type=float, default=None, help="Model B's threshold.")
@click.option(
    "--rate",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1, max=50),
    help="Parts per second on the simulated line (the Mega's timing; not the replay's speed).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default runs/replay-<time>).",
)
@click.option(
    "--serve",
    "serve_listen",
    default=None,
    metavar="ADDR",
    help="Show the operator's page over the replay on HOST:PORT, and keep it up after the "
    "replay until Ctrl-C, for reviewing its parts (OUT/audit.sqlite, OUT/images; "
    "actions use web.token_file, else a token written to OUT/web-token).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def replay(
    source: Path,
    config_path: Path | None,
    model_dir: Path | None,
    threshold: float | None,
    against_dir: Path | None,
    against_threshold: float | None,
    rate: float,
    out_dir: Path | None,
    serve_listen: str | None,
    as_json: bool,
) -> None:
    """Dry-run SOURCE (a recording, an image folder, or a video) through the station.

    The same judging as `station run`, verdicts to a simulated Mega; no serial
    port or camera is opened. Labels come from def_front/ and ok_front/
    folders, or from a recording's `label` fields.
    """
    import time

    from station.classifier.litert_classifier import Classifier, ModelLoadError
    from station.config import ConfigError, load_station_config
    from station.replay import report
    from station.replay.inputs import ReplayError, ReplaySource
    from station.replay.replay import replay as run_replay
    from station.vision.vision_trigger import LineCrossing

    out_dir = out_dir or Path("runs") / time.strftime("replay-%Y%m%d-%H%M%S")
    page = None
    try:
        config, calibration = load_station_config(config_path or VIRTUAL_LINE_CONFIG)
        models = [(Classifier(model_dir or config.model, threshold), threshold)]
        if against_dir is not None:
            models.append((Classifier(against_dir, against_threshold), against_threshold))
        crossing = LineCrossing(config.vision_trigger, calibration.camera.min_part_area_px)
        replay_source = ReplaySource(source, calibration.camera.crop_px, crossing)
        if serve_listen:
            page = _replay_page(config, calibration, models[0][0], source, out_dir, serve_listen)
        result = run_replay(
            replay_source,
            models,
            calibration,
            rate,
            progress=not as_json,
            trail=page.trail if page else None,
        )
    except (ConfigError, ModelLoadError, ReplayError) as exc:
        if page:
            page.close()
        raise click.ClickException(str(exc)) from None
    if not result.runs[0].results and not page:
        raise click.ClickException(
            f"{source}: no part could be replayed ({len(result.bad_inputs)} unreadable)"
        )
    summary = report.write(result, out_dir)
    click.echo(json.dumps(summary) if as_json else report.as_text(summary))
    if page:
        click.echo(f"replay finished; its page stays on {page.server.url} until Ctrl-C", err=True)
        page.serve_until_signalled()


@main.command()
@click.option("--parts", default=100_000, show_default=True, help="Parts to run past the gate.")
@click.option(
    "--faults",
    "fault_text",
    default="default",
    show_default=True,
    help="none, default, or NAME=VALUE,... over the default (e.g. default,garble=0.01): "
    "mega_reset_every_s, unplug_every_s, unplug_s, camera_stall_every_s, camera_stall_s, "
    "classifier_stall_every_s, classifier_stall_s, trigger_stall_every_s, trigger_stall_s, "
    "classifier_error, garble, drop, lost_ack, eye_miss.",
)
@click.option("--seed", default=1, show_default=True, help="Belt layout and fault draws.")
@click.option(
    "--render",
    is_flag=True,
    help="Render and classify every frame (real judge); default: the model's score per image.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Station file with a virtual_line section (default: the virtual line's).",
)
@click.option(
    "--parts-from",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled image folder (def_front/, ok_front/) to draw parts from.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the audit database and parts.csv (default runs/soak-<time>).",
)
@click.option(
    "--vision-line",
    is_flag=True,
    help="A line with no photo-eye, triggered by the camera (also: trigger: vision in the file).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary.")
def soak(
    parts, fault_text, seed, render, config_path, parts_from, out_dir, vision_line, as_json
) -> None:
    """The stepped virtual line over many parts, with faults; exit 1 if a part was lost
    or a defective part passed for any reason but the model's own judgement (a vision
    line: or but what it cannot help and reports, README "Line truth: the soak")."""
    import time

    from station.classifier.litert_classifier import Classifier, ModelLoadError
    from station.config import ConfigError, TriggerMode, load_station_config
    from station.sim.soak import SoakRequest, run_soak
    from station.sim.stepped_line import FaultPlan

    try:
        plan = FaultPlan.parse(fault_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    try:
        config, calibration = load_station_config(config_path or VIRTUAL_LINE_CONFIG)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if config.virtual_line is None:
        raise click.UsageError(f"{config.station}: the configuration has no virtual_line section")
    config = _virtual_vision_line(config, vision_line)
    line = config.virtual_line
    if parts_from is not None:
        line = line.model_copy(update={"parts_from": parts_from})
    vision = config.vision_trigger if config.trigger == TriggerMode.VISION else None
    try:
        classifier = Classifier(config.model, threshold=calibration.threshold)
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from None
    out_dir = out_dir or Path("runs") / time.strftime("soak-%Y%m%d-%H%M%S")
    request = SoakRequest(parts, plan, out_dir, seed, render, progress=not as_json)
    try:
        summary = run_soak(
            request, calibration, line, classifier, config.camera.max_frame_lag_s, vision
        )
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_summary(summary, as_json)
    if not summary["ok"]:
        raise SystemExit(1)


def _virtual_vision_line(config, vision_line: bool):
    """The virtual line with no photo-eye when asked (--vision-line) or configured
    (trigger: vision): the belt's photo-eye and the station's trigger must agree."""
    from station.config import TriggerMode

    if not (vision_line or config.trigger == TriggerMode.VISION) or config.virtual_line is None:
        return config
    line = config.virtual_line.model_copy(update={"photo_eye": False})
    return config.model_copy(update={"trigger": TriggerMode.VISION, "virtual_line": line})


def _run_virtual_line(config, calibration, parts, parts_from, faults, out_dir, as_json) -> None:
    import time

    from station.sim.virtual_line import Fault, run_virtual_line

    if config.virtual_line is None:
        raise click.UsageError(f"{config.station}: the configuration has no virtual_line section")
    try:
        fault_list = [Fault.parse(text) for text in faults]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    out_dir = out_dir or Path("runs") / time.strftime("virtual-line-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    audit = config.audit.model_copy(
        update={"database": out_dir / "audit.sqlite", "images_dir": out_dir / "images"}
    )
    line = config.virtual_line
    if parts_from is not None:
        line = line.model_copy(update={"parts_from": parts_from})
    config = config.model_copy(update={"audit": audit, "virtual_line": line})
    if config.web.listen and config.web.token_file is None:
        config = config.model_copy(
            update={"web": config.web.model_copy(update={"token_file": _new_token(out_dir)})}
        )
    summary = run_virtual_line(config, calibration, line, parts, fault_list, out_dir)
    _print_summary(summary, as_json)


@main.command("export-reviewed")
@click.option(
    "--database",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The station's audit database (audit.database in the station file).",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Station file whose calibration says how the line crops a part "
    "(default: $STATION_CONFIG, else /etc/station/station.yaml).",
)
def export_reviewed_command(database: Path, out_dir: Path, config_path: Path | None) -> None:
    """Parts reviewed on the operator's page as def_front/ + ok_front/ with a manifest:
    ready for `station train`, `station evaluate` and `station replay --against`."""
    from station.calibrate.commands import default_config
    from station.config import ConfigError, load_station_config
    from station.web.export import export_reviewed

    try:
        _config, calibration = load_station_config(config_path or default_config())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    camera = calibration.camera
    result = export_reviewed(database, out_dir, camera.crop_px, camera.min_part_area_px)
    click.echo(
        f"{result.exported['defective']} defective and {result.exported['ok']} OK parts "
        f"written to {out_dir}; manifest {result.manifest}"
    )
    for uid, why in result.skipped:
        click.echo(f"  part {uid} not exported: {why}", err=True)


@main.command()
@click.option("--url", default="http://127.0.0.1:8090/", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def screenshot(url: str, out_dir: Path) -> None:
    """Each view of a running station's operator's page as a PNG (headless Chromium)."""
    from station.web.screenshot import BrowserMissing, headless_chromium, screenshot_views

    try:
        driver = headless_chromium()
    except BrowserMissing as exc:
        raise click.ClickException(str(exc)) from None
    try:
        for path in screenshot_views(driver, url, out_dir):
            click.echo(path)
    finally:
        driver.quit()


def _replay_page(config, calibration, classifier, source: Path, out_dir: Path, listen: str):
    """`station replay --serve`: the replay's audit trail and the page over it."""
    from station.replay.page import ReplayPage, ReplayTrail
    from station.web.server import load_token

    out_dir.mkdir(parents=True, exist_ok=True)
    trail = ReplayTrail(
        out_dir,
        source.name,
        classifier.version,
        classifier.threshold,
        calibration.checksum(),
        config.audit.images_quota_mb,
    )
    try:
        token = load_token(config.web.token_file or _new_token(out_dir))
        return ReplayPage.start(trail, listen, token, config.web.shifts)
    except (ValueError, OSError) as exc:
        trail.close()
        raise click.ClickException(f"--serve {listen}: {exc}") from None


def _new_token(out_dir: Path) -> Path:
    """A fresh token for the virtual line's page, readable by this user only."""
    import os
    import secrets

    path = out_dir / "web-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(24) + "\n")
    click.echo(f"operator's page: actions need the token in {path}", err=True)
    return path


def _cross_validate(
    data_dir: Path, out_dir: Path, config, folds: int, attach_to: Path | None
) -> None:
    from station.classifier.model_card import ModelCardError
    from station.training.cv import attach_to_card, cross_validate

    try:
        summary = cross_validate(data_dir, out_dir, config, folds)
        if attach_to:
            attach_to_card(summary, out_dir, attach_to, config)
    except (ValueError, ModelCardError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"out of fold over {summary['images']} images: {_counted(summary['escapes'], 'escape')} "
        f"in {summary['defective']} defective, "
        f"{_counted(summary['false_rejects'], 'false reject')}, "
        f"accuracy {summary['accuracy']:.4f}; {summary['left_out_by_label_review']} left out "
        "by the label review"
    )
    for fold in summary["folds"]:
        auc = "-" if fold["auc"] is None else f"{fold['auc']:.4f}"
        click.echo(
            f"  fold {fold['fold']}: {fold['images']} images, accuracy {fold['accuracy']:.4f}, "
            f"{_counted(fold['escapes'], 'escape')}, "
            f"{_counted(fold['false_rejects'], 'false reject')}, "
            f"AUC {auc}: {fold['gate']}"
        )
    click.echo(
        "  every threshold moved by (logits; below 0 lowered): escapes, false rejects, accuracy"
    )
    for row in summary["moved_thresholds"]:
        click.echo(
            f"    {row['logits']:+4.1f}: {row['escapes']}, {row['false_rejects']}, "
            f"{row['accuracy']:.4f}"
        )
    click.echo(
        f"written to {out_dir} (oof_scores.csv, cv_summary.json, oof_margins.png, escapes/)"
        + (f"; figures attached to {attach_to / 'model_card.json'}" if attach_to else "")
    )
    if not summary["all_folds_pass_gate"]:
        raise click.ClickException("a fold model failed the quality gate on its held-out fold")


def _counted(count: int, noun: str) -> str:
    """'1 escape', '2 escapes': a count a person reads."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _print_summary(summary: dict, as_json: bool) -> None:
    """One JSON line, or one `key  value` line each for a person."""
    if as_json:
        click.echo(json.dumps(summary))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        click.echo(f"{key:<{width}}  {value}")


main.add_command(calibrate)
