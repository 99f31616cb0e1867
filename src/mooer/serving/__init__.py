"""``mooer serve``: an OpenAI-compatible speech API with micro-batching (continuous batching on the vllm
engine), token streaming and a web page.

>>> from mooer import MooER                                     # doctest: +SKIP
>>> from mooer.serving import ServeSettings, create_app        # doctest: +SKIP
>>> app = create_app(MooER.from_pretrained(None), ServeSettings(api_key="secret"))   # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)                    # doctest: +SKIP

Needs the ``serve`` extra: ``pip install 'mooer[serve]'`` (fastapi, uvicorn, python-multipart, and websockets
for live transcription, :mod:`mooer.serving.realtime`).
"""

from mooer.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):  # create_app imports fastapi: only when asked for
    if name == "create_app":
        from mooer.serving.app import create_app

        return create_app
    raise AttributeError(name)
