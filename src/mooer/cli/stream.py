"""``mooer stream``: send a file or stdin to a server's live transcription endpoint at real-time speed and
print the interim and final results (a client of :mod:`mooer.serving.realtime`)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import sys
import time
from typing import Any, AsyncIterator

import numpy as np

from mooer.serving.settings import API_KEY_ENV

EXAMPLES = """
examples:
  mooer serve &                                         # a server (the bundled demo model)
  mooer stream meeting.wav                              # at real-time speed; finals on stdout
  mooer stream talk.mp3 --task asr_ast --format jsonl   # every server event as one JSON line
  mooer stream a.wav --speed 4 --url http://host:8000   # 4x real time (the server must allow it:
                                                        #   mooer serve --realtime-max-speed 5)
  arecord -f S16_LE -r 16000 -c 1 | mooer stream -      # the microphone (raw PCM16 on stdin)
  ffmpeg -i in.mp4 -f s16le -ac 1 -ar 16000 - | mooer stream -

Files are decoded and resampled to 16 kHz like every mooer input. Stdin is raw 16-bit little-endian mono
PCM at --rate (16000 or 24000). Final results go to stdout (one line per segment; asr_ast: transcript and
translation on two lines); interim results go to stderr (overwritten in place on a terminal).
"""

CHUNK_MS = 100


def add_parser(sub: argparse._SubParsersAction) -> None:
    help_ = "stream a file or the microphone to a mooer server and print live transcription"
    p = sub.add_parser("stream", help=help_, description=help_, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="FILE|-", help="an audio file, or - for raw PCM16 on stdin")
    p.add_argument("--url", default="http://127.0.0.1:8000",
                   help="the server (http://, https://, ws:// or wss://; default: http://127.0.0.1:8000)")
    p.add_argument("--api-key", metavar="KEY", help=f"the server's API key (default: ${API_KEY_ENV})")
    p.add_argument("--task", choices=["asr", "ast", "asr_ast"], help="default: the server's (asr)")
    p.add_argument("--speed", type=float, default=1.0, help="times real time (default: 1)")
    p.add_argument("--rate", type=int, choices=[16000, 24000], default=16000,
                   help="sample rate of raw PCM on stdin (default: 16000)")
    p.add_argument("--interim-ms", type=int, metavar="MS",
                   help="interval of interim results (0 = none; default: the server's, 1000)")
    p.add_argument("--silence-ms", type=int, metavar="MS", help="pause that ends a segment (default: 500)")
    p.add_argument("--format", choices=["text", "jsonl"], default="text",
                   help="text: final texts; jsonl: every server event as a JSON line (default: text)")
    p.set_defaults(func=run)


def realtime_url(url: str) -> str:
    """The WebSocket URL of the live transcription endpoint of a server given by its base URL."""
    base = url.rstrip("/")
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if base.startswith(http):
            base = ws + base[len(http):]
    if not base.startswith(("ws://", "wss://")):
        base = "ws://" + base
    if base.endswith("/v1/realtime"):
        base = base[: -len("/v1/realtime")]
    return f"{base}/v1/realtime?intent=transcription"


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    from mooer.audio import iter_audio_chunks

    for chunk in iter_audio_chunks(path, CHUNK_MS / 1000, sample_rate=16000):
        pcm = np.clip(np.round(np.asarray(chunk, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
        yield pcm.tobytes()


async def _stdin_chunks(rate: int) -> AsyncIterator[bytes]:
    size = rate * CHUNK_MS // 1000 * 2
    loop = asyncio.get_running_loop()
    stream = sys.stdin.buffer
    pending = b""
    while True:
        data = await loop.run_in_executor(None, stream.read1 if hasattr(stream, "read1") else stream.read, size)
        if not data:
            break
        pending += data
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    pending = pending[: len(pending) // 2 * 2]
    if pending:
        yield pending


class _Printer:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.tty = sys.stderr.isatty()
        self.interim_shown = False

    def event(self, event: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        kind = event.get("type", "")
        if kind.endswith("input_audio_transcription.delta") and event.get("transcript", event.get("delta")):
            text = event.get("transcript") or event.get("delta", "")
            line = " ".join(text.split("\n"))
            if self.tty:
                sys.stderr.write(f"\r\033[K… {line}")
                self.interim_shown = True
            else:
                sys.stderr.write(f"… {line}\n")
            sys.stderr.flush()
        elif kind.endswith("input_audio_transcription.completed"):
            self._clear()
            print(event.get("transcript", ""), flush=True)
        elif kind.endswith("input_audio_transcription.failed"):
            self._clear()
            print(f"mooer: segment failed: {event.get('error', {}).get('message')}", file=sys.stderr)

    def _clear(self) -> None:
        if self.interim_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.interim_shown = False


async def stream(args: argparse.Namespace) -> int:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    key = args.api_key or os.environ.get(API_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    rate = 16000 if args.input != "-" else args.rate
    session: dict[str, Any] = {"input_audio_format": {"type": "audio/pcm", "rate": rate}}
    transcription = {k: v for k, v in (("task", args.task), ("interim_interval_ms", args.interim_ms)) if v is not None}
    if transcription:
        session["input_audio_transcription"] = transcription
    if args.silence_ms is not None:
        session["turn_detection"] = {"type": "server_vad", "silence_duration_ms": args.silence_ms}
    printer = _Printer(args.format)
    chunks = _stdin_chunks(rate) if args.input == "-" else _file_chunks(args.input)
    state = {"committed": 0, "done": 0, "error": None, "updates": 0}
    flushed = asyncio.Event()  # the server has handled everything sent (see the end of the stream)
    finished = asyncio.Event()

    async with connect(realtime_url(args.url), additional_headers=headers, subprotocols=["realtime"],
                       max_size=None) as ws:
        async def receive() -> None:
            try:
                async for message in ws:
                    event = json.loads(message)
                    kind = event.get("type")
                    printer.event(event)
                    if kind == "transcription_session.updated":
                        state["updates"] += 1
                        if state["updates"] == 2:
                            flushed.set()
                    elif kind == "input_audio_buffer.committed":
                        state["committed"] += 1
                    elif kind in ("conversation.item.input_audio_transcription.completed",
                                  "conversation.item.input_audio_transcription.failed"):
                        state["done"] += 1
                    elif kind == "error":
                        error = event.get("error", {})
                        if error.get("code") != "input_audio_buffer_commit_empty":
                            state["error"] = error
                            print(f"mooer: server error: {error.get('message')}", file=sys.stderr)
                    if flushed.is_set() and state["done"] >= state["committed"]:
                        finished.set()
            except ConnectionClosed:
                pass
            finally:
                flushed.set()
                finished.set()

        reader = asyncio.create_task(receive())
        await ws.send(json.dumps({"type": "transcription_session.update", "session": session}))
        started = time.monotonic()
        sent_s = 0.0
        try:
            async for pcm in chunks:
                ahead = started + sent_s / args.speed - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm).decode("ascii")}))
                sent_s += len(pcm) / 2 / rate
            # The end: commit the open segment, then an empty update. The server handles events in order, so
            # its answer (the second 'updated') means every segment has been committed; then wait for their
            # results.
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "transcription_session.update", "session": {}}))
            await flushed.wait()
            if state["done"] >= state["committed"]:
                finished.set()
            await finished.wait()
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if ws.close_code not in (None, 1000) and state["error"] is None:
            print(f"mooer: the server closed the connection ({ws.close_code} {ws.close_reason})", file=sys.stderr)
            return 1
    return 1 if state["error"] is not None else 0


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("websockets") is None:
        print("mooer: error: mooer stream needs the websockets package: pip install 'mooer[serve]'", file=sys.stderr)
        return 2
    if args.speed <= 0:
        print("mooer: error: --speed must be > 0", file=sys.stderr)
        return 2
    if args.input != "-" and not os.path.exists(args.input):
        print(f"mooer: error: {args.input}: no such file", file=sys.stderr)
        return 2
    try:
        return asyncio.run(stream(args))
    except OSError as e:
        print(f"mooer: error: cannot reach {args.url}: {e}", file=sys.stderr)
        return 1
