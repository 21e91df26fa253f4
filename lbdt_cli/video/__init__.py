"""Video in and out for `lbdt segment`.

    info.py      VideoInfo, Frame
    ffmpeg.py    every ffmpeg process: probe, decode (FFmpegReader), encode (FFmpegWriter)
    matroska.py  raw frames with their presentation times, as the encoder's input stream
    reader.py    probe / iter_frames over video files and frame folders
    draw.py      overlay, DAVIS palette, attention grids (pixels only, no files)
    writers.py   one small class per output format over a common Writer base
    outputs.py   VideoOutputs: a clip's writers in a folder renamed into place when complete
    pipeline.py  Segmenter: inputs -> model -> outputs, clip after clip
"""

from lbdt_cli.video.ffmpeg import ffmpeg_exe
from lbdt_cli.video.info import Frame, VideoInfo
from lbdt_cli.video.reader import count_frames, iter_frames, probe

__all__ = ["Frame", "VideoInfo", "count_frames", "ffmpeg_exe", "iter_frames", "probe"]
