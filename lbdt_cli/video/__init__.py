"""Video input (ffmpeg subprocess or frame folders) and the per-format output writers."""

from lbdt_cli.video.reader import Frame, VideoInfo, count_frames, ffmpeg_exe, iter_frames, probe

__all__ = ["Frame", "VideoInfo", "count_frames", "ffmpeg_exe", "iter_frames", "probe"]
