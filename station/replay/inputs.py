"""What `station replay` can read: a recording, a folder of images, a video file.

Each source gives parts in order: a frame (or the reason it could not be
read), a name a person can find again, and the label where one is known.
Nothing here opens a camera device or a serial port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from station.camera.frames import BadFrame, CameraError, Frame
from station.camera.sources import VIDEO_SUFFIXES, ImageFolder, VideoFile, decode_image_file
from station.recording import RecordingError, is_recording, recorded_parts
from station.vision.vision_trigger import LineCrossing


class ReplayError(RuntimeError):
    """The source cannot be replayed at all (missing, empty, unknown kind); names it."""


@dataclass(frozen=True)
class ReplayPart:
    name: str
    frame: Frame
    photo: bool
    """A photo from an image folder, of any size: framed by `frame_photo` (Judge.judge)."""
    label: str | None = None
    recorded: dict | None = None
    """A recording's metadata for the part: what the line decided then."""


@dataclass(frozen=True)
class BadInput:
    name: str
    reason: str


class ReplaySource:
    """A source opened for replay: its kind, how many items it holds (if known), its items."""

    def __init__(self, path: Path, crop_px: int, crossing: LineCrossing):
        self.path = Path(path)
        self.crop_px = crop_px
        self.crossing = crossing
        if not self.path.exists():
            raise ReplayError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self.kind = "recording" if is_recording(self.path) else "image_folder"
        elif self.path.suffix.lower() in VIDEO_SUFFIXES:
            self.kind = "video"
        else:
            raise ReplayError(
                f"{self.path}: not a recording, an image folder or a video "
                f"({', '.join(sorted(VIDEO_SUFFIXES))})"
            )
        self.total: int | None = None
        """Items to read (images, recorded parts, or video frames); None if unknown."""
        self._items: Iterator[ReplayPart | BadInput | None] = {
            "recording": self._recording,
            "image_folder": self._image_folder,
            "video": self._video,
        }[self.kind]()

    def __iter__(self) -> Iterator[ReplayPart | BadInput | None]:
        """Each item read: a part, an input that could not be read, or None for a video
        frame that shows no part crossing (so that progress can count frames)."""
        return self._items

    # --- the kinds ----------------------------------------------------------------

    def _recording(self) -> Iterator[ReplayPart | BadInput]:
        try:
            parts = recorded_parts(self.path)
        except RecordingError as exc:
            raise ReplayError(str(exc)) from None
        if not parts:
            raise ReplayError(f"{self.path}: a recording with no parts in it")
        self.total = len(parts)
        return self._read_recording(parts)

    def _read_recording(self, parts) -> Iterator[ReplayPart | BadInput]:
        for index, part in enumerate(parts):
            name = str(part.image.relative_to(self.path))
            if part.meta is None:
                yield BadInput(name, part.problem or "unreadable")
                continue
            try:
                image = decode_image_file(part.image)
            except ValueError as exc:
                yield BadInput(name, str(exc))
                continue
            frame = Frame(image, float(index), index + 1, str(self.path), {"file": name})
            yield ReplayPart(name, frame, False, part.meta.get("label"), part.meta)

    def _image_folder(self) -> Iterator[ReplayPart | BadInput]:
        folder = ImageFolder(self.path)
        try:
            folder.open()
        except CameraError as exc:
            raise ReplayError(str(exc)) from None
        self.total = len(folder.files)
        return self._read_folder(folder)

    def _read_folder(self, folder: ImageFolder) -> Iterator[ReplayPart | BadInput]:
        for path in list(folder.files):
            name = str(path.relative_to(self.path))
            try:
                frame = folder.read()
            except BadFrame as exc:
                yield BadInput(name, str(exc))
                continue
            assert frame is not None
            yield ReplayPart(name, frame, True, frame.meta.get("label"))

    def _video(self) -> Iterator[ReplayPart | BadInput | None]:
        video = VideoFile(self.path)
        try:
            video.open()
        except CameraError as exc:
            raise ReplayError(str(exc)) from None
        if video.frame_count == 0:
            video.close()
            raise ReplayError(f"{self.path}: a video with no frames")
        self.total = video.frame_count
        return self._read_video(video)

    def _read_video(self, video: VideoFile) -> Iterator[ReplayPart | BadInput | None]:
        """Parts are the frames in which a part crosses the trigger line (as on a line with
        no photo-eye); `total` counts frames, so progress is in frames."""
        previous: list[float] = []
        try:
            while True:
                try:
                    frame = video.read()
                except CameraError as exc:
                    yield BadInput(f"{self.path.name}#end", str(exc))
                    return
                if frame is None:
                    return
                current = self.crossing.centres(frame.image)
                if self.crossing.crossing(previous, current) is not None:
                    yield ReplayPart(f"{self.path.name}#frame{frame.index}", frame, False)
                else:
                    yield None  # a frame with no part crossing: progress only
                previous = current
        finally:
            video.close()
