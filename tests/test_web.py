"""Browser end-to-end test of the ``mooer serve`` web page: headless Chromium driven by playwright-core.

Needs ``node``, Debian's ``chromium`` and ``npm install`` in ``tests/web`` (playwright-core). The test
FAILS when any of them is missing: CI must install them::

    apt-get install -y chromium nodejs npm
    (cd tests/web && npm ci)

Set ``MOOER_WEB_SCREENSHOTS=DIR`` to keep the screenshots (one per case) in DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from server_thread import ServerThread
from fixtures_path import AUDIO, OFFICIAL_TINY

from mooer.api import MooER
from mooer.decoding import PRESETS
from mooer.serving import ServeSettings, create_app

WEB = Path(__file__).resolve().parent / "web"
CHROMIUM = os.environ.get("MOOER_CHROMIUM", "/usr/bin/chromium")
CLIP = AUDIO / "zh1.wav"


def _require_browser_tools() -> str:
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (apt-get install -y nodejs npm)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if not (WEB / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append("playwright-core (cd tests/web && npm ci)")
    if missing:
        pytest.fail("the browser test needs: " + "; ".join(missing), pytrace=False)
    return node  # type: ignore[return-value]


def test_web_page_upload_transcribe_and_stream(tmp_path):
    node = _require_browser_tools()
    model = MooER.from_pretrained(OFFICIAL_TINY)
    both = model.transcribe(CLIP, task="asr_ast")[0]
    streamed = model.transcribe(CLIP, task="asr", decoding="greedy")[0]
    translated = model.transcribe(CLIP, task="ast")[0]
    plain = model.transcribe(CLIP, task="asr")[0]
    phrase = "的是" if "的是" not in plain.text else "是的"
    boosted = model.transcribe(CLIP, task="asr", decoding=PRESETS["official"].replace(hotwords=((phrase, 20.0),)))[0]
    assert phrase in boosted.text and phrase not in plain.text
    cases = [
        {"name": "asr_ast", "task": "asr_ast", "stream": False, "expect": {"asr": both.asr, "ast": both.ast}},
        {"name": "asr_streaming", "task": "asr", "stream": True, "expect": {"asr": streamed.text, "ast": None}},
        {"name": "ast", "task": "ast", "stream": False, "expect": {"asr": None, "ast": translated.text}},
        {"name": "asr_hotwords", "task": "asr", "stream": False, "hotwords": f"{phrase}\t20",
         "expect": {"asr": boosted.text, "ast": None}},
    ]
    shots = Path(os.environ.get("MOOER_WEB_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with ServerThread(create_app(model, ServeSettings())) as server:
        config = tmp_path / "e2e.json"
        config.write_text(json.dumps({"url": server.url, "audio": str(CLIP), "screenshot_dir": str(shots),
                                      "chromium": CHROMIUM, "cases": cases}, ensure_ascii=False))
        proc = subprocess.run([node, "e2e.js", str(config)], cwd=WEB, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from e2e.js (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(lines[-1])
    assert report["failures"] == [], report
    assert proc.returncode == 0, proc.stderr
    shown = {c["name"]: c for c in report["cases"]}
    assert shown["asr_ast"]["asr"] == both.asr and shown["asr_ast"]["ast"] == both.ast
    assert shown["asr_streaming"]["asr"] == streamed.text and "greedy" in shown["asr_streaming"]["meta"]
    assert shown["ast"]["ast"] == translated.text
    assert shown["asr_hotwords"]["asr"] == boosted.text and "1 hotword" in shown["asr_hotwords"]["meta"]
    for case in report["cases"]:
        assert Path(case["screenshot"]).stat().st_size > 10_000


def test_live_page_shows_the_spoken_sentences(tmp_path):
    """The live mode with Chromium's fake microphone playing two sentences: both appear, one per pause."""
    import numpy as np
    import soundfile as sf

    from mooer.assets import sample_path

    node = _require_browser_tools()
    demo = MooER.from_pretrained(None)  # readable text: the bundled demo model reads its samples exactly
    zh, sr = sf.read(sample_path("sample_zh.wav"), dtype="int16")
    en, _ = sf.read(sample_path("sample_en.wav"), dtype="int16")
    silence = np.zeros(sr, np.int16)
    mic = tmp_path / "microphone.wav"
    sf.write(mic, np.concatenate([silence, zh, silence, silence, en, silence, silence]), sr, subtype="PCM_16")
    spoken = [demo.transcribe(sample_path(name), task="asr")[0].text for name in ("sample_zh.wav", "sample_en.wav")]
    assert spoken == ["索引表达式中不允许分组操作", "grouping operations are not allowed in index expressions"]
    shots = Path(os.environ.get("MOOER_WEB_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with ServerThread(create_app(demo, ServeSettings())) as server:
        config = tmp_path / "live.json"
        config.write_text(json.dumps({"url": server.url, "audio": str(mic), "chromium": CHROMIUM, "task": "asr",
                                      "sentences": 2, "screenshot": str(shots / "live.png")}))
        proc = subprocess.run([node, "live.js", str(config)], cwd=WEB, capture_output=True, text=True, timeout=300)
        sessions = server.server.config.app.state.realtime.stats()["sessions"]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from live.js (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(lines[-1])
    assert report["failures"] == [], report
    assert report["asr"] == spoken, report  # one final sentence per pause, as spoken
    assert report["interims"] >= 1 and report["meta"] == "live · 2 sentences"
    assert sessions == 1 and Path(shots / "live.png").stat().st_size > 10_000
