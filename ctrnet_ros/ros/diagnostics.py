"""Counters of the calibration node and the ``/diagnostics`` status built from them.

The worker thread and the callbacks update :class:`NodeStats` (thread-safe); a steady-clock timer
calls :meth:`NodeStats.report` once per period, which turns counts into rates and decides the level:

* ERROR: the node cannot work (no model, no camera_info, undecodable images, camera_info that does
  not match the images);
* WARN: frames are being rejected for reasons that can pass (stale or missing joint states, robot
  out of view, poor fit), or no images arrive;
* OK: the newest frame gave a usable estimate.

The message is the newest rejection's reason tag and detail (e.g. ``joint_states: panda_joint4:
never received``) while rejections continue, and a one-line summary of the calibration otherwise.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["NodeStats", "CalibrationSummary", "ERROR_REASONS", "level_for_reason", "make_diagnostic_array"]

#: rejection tags that mean the set-up is broken (ERROR); all others are WARN
ERROR_REASONS = frozenset({"not_ready", "bad_image", "camera_mismatch", "no_camera_info", "camera_info",
                           "no_frame_id", "internal"})


def level_for_reason(reason: str) -> bytes:
    return DiagnosticStatus.ERROR if reason in ERROR_REASONS else DiagnosticStatus.WARN


@dataclass
class CalibrationSummary:
    """The calibration as the node last published it (for the diagnostic key-values)."""

    mode: str = "static"
    fused_frames: int = 0
    converged: bool = False
    trans_std_m: float = float("inf")
    rot_std_deg: float = float("inf")
    segment: int = 0
    published_on: str = "nothing yet"  # "/tf", "/tf_static" or "nothing yet"
    collecting: str = ""  # static mode, no fused pose yet: how many distinct configurations are in, e.g. "1 of 3"
    disputed: str = ""  # static mode: an unconfirmed bump withholds the fused pose, e.g. "12 frames (1 distinct ...)"


class NodeStats:
    """Thread-safe counters; :meth:`report` is called by one timer."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.images_in = 0
        self.processed = 0  # frames the worker handled (usable or rejected)
        self.usable = 0  # frames with a usable per-frame estimate
        self.tf_published = 0
        self.dropped = 0  # set from the frame slot
        self.rejections: Counter[str] = Counter()
        self.last_reason: str | None = None  # None: the newest processed frame was usable
        self.last_detail = ""
        self.last_error = ""  # newest rejection "reason: detail", kept after usable frames
        self.last_rmse_px = float("nan")
        self.last_inference_ms = float("nan")
        self.joint_messages = 0
        self.nan_joint_samples = 0
        self._latencies_ms: deque[float] = deque(maxlen=300)  # image callback -> publication, recent frames
        self._stage_ms: dict[str, deque[float]] = {}  # worker stage -> recent durations
        self._last_image_time: float | None = None
        self._prev = (self._clock(), 0, 0, 0)  # (time, images_in, processed, tf_published) at the last report

    # -- updates (any thread) ------------------------------------------------------------------
    def image_received(self) -> None:
        with self._lock:
            self.images_in += 1
            self._last_image_time = self._clock()

    def frame_done(self, *, reason: str | None, detail: str = "", rmse_px: float | None = None,
                   inference_ms: float | None = None) -> None:
        with self._lock:
            self.processed += 1
            self.last_reason, self.last_detail = reason, detail
            if reason is None:
                self.usable += 1
            else:
                self.rejections[reason] += 1
                self.last_error = f"{reason}: {detail}"
            if rmse_px is not None:
                self.last_rmse_px = float(rmse_px)
            if inference_ms is not None:
                self.last_inference_ms = float(inference_ms)

    def published_after(self, latency_ms: float) -> None:
        """Record the time from the image callback to the publication of that image's pose."""
        with self._lock:
            self._latencies_ms.append(float(latency_ms))

    def stage_times(self, timings_ms: dict[str, float]) -> None:
        """Record per-stage durations of one frame (decode, fk, inference, pnp, fusion...)."""
        with self._lock:
            for k, v in timings_ms.items():
                self._stage_ms.setdefault(k, deque(maxlen=300)).append(float(v))

    def tf_sent(self) -> None:
        with self._lock:
            self.tf_published += 1

    def joints_received(self, nan_samples: int) -> None:
        with self._lock:
            self.joint_messages += 1
            self.nan_joint_samples += nan_samples

    # -- report (timer) ------------------------------------------------------------------------
    def report(self, *, name: str, hardware_id: str, image_topic: str, summary: CalibrationSummary,
               not_ready: str = "", extra: dict[str, str] | None = None) -> DiagnosticStatus:
        """A DiagnosticStatus for the period since the previous call (rates over that period)."""
        with self._lock:
            now = self._clock()
            t0, n_in0, n_proc0, n_tf0 = self._prev
            dt = max(now - t0, 1e-6)
            rate_in = (self.images_in - n_in0) / dt
            rate_proc = (self.processed - n_proc0) / dt
            rate_tf = (self.tf_published - n_tf0) / dt
            self._prev = (now, self.images_in, self.processed, self.tf_published)
            since_image = None if self._last_image_time is None else now - self._last_image_time

            st = DiagnosticStatus(name=name, hardware_id=hardware_id)
            if not_ready:
                st.level, st.message = DiagnosticStatus.ERROR, f"not_ready: {not_ready}"
            elif self.processed == 0 and self.images_in == 0:
                st.level, st.message = DiagnosticStatus.WARN, f"waiting for images on {image_topic}"
            elif since_image is not None and since_image > max(2.0 * dt, 1.0) and self.last_reason is None:
                st.level, st.message = DiagnosticStatus.WARN, f"no images on {image_topic} for {since_image:.1f} s"
            elif self.last_reason is not None:
                st.level = level_for_reason(self.last_reason)
                st.message = f"{self.last_reason}: {self.last_detail}"
            else:
                st.level = DiagnosticStatus.OK
                if summary.mode == "static" and summary.disputed:
                    st.level = DiagnosticStatus.WARN
                    st.message = (f"disputed: the last {summary.disputed} disagree with the fused calibration "
                                  "(the camera may have moved); publishing nothing until the robot moves or the "
                                  "frames agree again")
                elif summary.mode == "static" and summary.collecting:
                    st.message = (f"collecting: {summary.collecting} distinct robot configurations fused; "
                                  "the fused pose needs the robot to move (one pose seen many times is one piece "
                                  "of evidence)")
                elif summary.mode == "static":
                    state = "converged" if summary.converged else "converging"
                    st.message = (f"{state}: {summary.fused_frames} frames fused, 1-sigma "
                                  f"{summary.trans_std_m * 1e3:.2f} mm / {summary.rot_std_deg:.3f} deg")
                else:
                    st.message = "tracking (moving camera)"
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejections.items())) or "none"
            kv = {
                "image topic": image_topic,
                "input image rate [Hz]": f"{rate_in:.2f}",
                "processed rate [Hz]": f"{rate_proc:.2f}",
                "TF rate [Hz]": f"{rate_tf:.2f}",
                "images received": str(self.images_in),
                "processed frames": str(self.processed),
                "usable frames": str(self.usable),
                "dropped frames": str(self.dropped),
                "rejected frames": str(sum(self.rejections.values())),
                "reprojection RMSE [px]": f"{self.last_rmse_px:.3f}",
                "inference [ms]": f"{self.last_inference_ms:.1f}",
                "mode": summary.mode,
                "fused frames": str(summary.fused_frames),
                "collecting configurations": summary.collecting or "no",
                "disputed by": summary.disputed or "no",
                "converged": str(summary.converged).lower(),
                "translation std [mm]": f"{summary.trans_std_m * 1e3:.3f}",
                "rotation std [deg]": f"{summary.rot_std_deg:.4f}",
                "segment": str(summary.segment),
                "published on": summary.published_on,
                "joint state messages": str(self.joint_messages),
                "NaN joint samples": str(self.nan_joint_samples),
                "last error": self.last_error or "none",
                "error counts": counts,
            }
            lat = list(self._latencies_ms)
            kv["node latency median [ms]"] = f"{statistics.median(lat):.1f}" if lat else "nan"
            for stage, values in self._stage_ms.items():
                kv[f"{stage} median [ms]"] = f"{statistics.median(values):.1f}"
            kv.update(extra or {})
            st.values = [KeyValue(key=k, value=v) for k, v in kv.items()]
            return st


def make_diagnostic_array(status: DiagnosticStatus, stamp) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [status]
    return msg
