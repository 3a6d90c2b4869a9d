"""Fetching remote files politely, once: retries, a per-host rate limit, and a disk cache.

A :class:`Fetcher` wraps one :class:`requests.Session` whose adapter retries with urllib3's
:class:`~urllib3.util.Retry` (exponential backoff on connection errors and on 429, 500, 502,
503 and 504, honouring a ``Retry-After`` header up to :data:`MAX_RETRY_AFTER` seconds). Every
request first waits for its host's turn (``rate`` requests per second per host, across threads),
carries a ``User-Agent`` naming snoop-nb and a timeout. What it fetches goes to a disk cache,
one file per URL (the cache key; a caller may key a resized picture by the picture's own URL),
written to a temp file and renamed, so a killed run leaves no half file and the next run fetches
nothing twice. :meth:`Fetcher.fetch_many` fetches a list with a bounded number of threads and
reports each failure (an HTTP error, a timeout after the retries, a body that is no picture) as
a :class:`FetchError` of its own, never raising for one file.

>>> fetcher = Fetcher("photos.snoop/remote", rate=2.0)            # doctest: +SKIP
>>> fetcher.get_json("https://example.org/iiif/book/manifest.json")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from snoop_nb.errors import SnoopError

__all__ = [
    "CACHE_DIR",
    "DEFAULT_RATE",
    "FetchError",
    "Fetcher",
    "Job",
    "cache_file",
    "is_url",
]

#: The cache's folder inside a collection's directory.
CACHE_DIR = "remote"
#: Requests per second per host, by default: polite to a heritage library's servers.
DEFAULT_RATE = 5.0
#: The longest ``Retry-After`` honoured (seconds); a longer one is waited this long.
MAX_RETRY_AFTER = 120.0
#: Statuses retried (with backoff) before a fetch is given up.
RETRY_STATUSES = (429, 500, 502, 503, 504)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HTTP = re.compile(r"^https?://", re.IGNORECASE)
_KEEP_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,5}$")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("snoop-nb")
    except Exception:  # an uninstalled checkout
        return "dev"


#: What each request says it is.
USER_AGENT = f"snoop-nb/{_version()} (visual search; +https://github.com/snoop-nb)"


class FetchError(SnoopError):
    """A URL could not be fetched; ``reason`` is short and says why (HTTP status, timeout...)."""

    def __init__(self, reason: str, url: str = ""):
        self.reason = reason
        self.url = url
        super().__init__(f"{url}: {reason}" if url else reason)


def is_url(text: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (a URL), False for a file path."""
    return isinstance(text, str) and bool(_URL.match(text))


def cache_file(cache: Path, key: str) -> Path:
    """Where the cache keeps the file of ``key`` (a URL): ``<cache>/<2 hex>/<hash><suffix>``,
    the suffix being the URL path's (``.jpg``) so that a reader sees the format by name."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    suffix = os.path.splitext(urlsplit(key).path)[1].lower()
    if not _KEEP_SUFFIX.match(suffix):
        suffix = ""
    return Path(cache) / digest[:2] / (digest + suffix)


@dataclass(frozen=True)
class Job:
    """One file to fetch: ``url`` (what is asked for) cached under ``key`` (default: the URL)."""

    url: str
    key: str | None = None

    @property
    def cache_key(self) -> str:
        return self.key or self.url


class _HostRate:
    """At most ``rate`` requests per second per host, shared by the threads of a Fetcher."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def _retry(retries: int, backoff: float):
    from urllib3.util.retry import Retry

    class _CappedRetry(Retry):
        """urllib3's Retry with ``Retry-After`` capped (a server asking for an hour gets
        :data:`MAX_RETRY_AFTER` seconds)."""

        def get_retry_after(self, response):
            after = super().get_retry_after(response)
            return None if after is None else min(after, MAX_RETRY_AFTER)

    options = {
        "total": retries,
        "connect": retries,
        "read": retries,
        "status": retries,
        "backoff_factor": backoff,
        "status_forcelist": RETRY_STATUSES,
        "allowed_methods": frozenset({"GET", "HEAD"}),
        "respect_retry_after_header": True,
        "raise_on_status": False,
    }
    try:
        return _CappedRetry(backoff_max=30.0, **options)
    except TypeError:  # urllib3 1.26: the longest backoff is a class attribute (120 s)
        return _CappedRetry(**options)


class Fetcher:
    """Fetches URLs into a disk cache with retries, a per-host rate limit and a timeout.

    ``cache`` is the cache's folder (a collection's is ``<collection>/remote``); ``rate`` the
    requests per second per host (``0``: no limit); ``timeout`` the seconds to connect and
    between bytes; ``retries`` how many times a failing request is tried again, waiting
    ``backoff * 2**n`` seconds (or the server's ``Retry-After``); ``workers`` the threads of
    :meth:`fetch_many`; ``refresh`` fetches again what the cache holds. ``requests`` counts
    the HTTP requests made (retries inside urllib3 not included).

    >>> f = Fetcher(tmp / "cache", rate=1.0, timeout=10)      # doctest: +SKIP
    >>> f.fetch("https://example.org/a.jpg")                  # doctest: +SKIP
    PosixPath('.../cache/3f/3f2a....jpg')
    """

    def __init__(
        self,
        cache: str | os.PathLike,
        *,
        rate: float = DEFAULT_RATE,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        workers: int = 4,
        user_agent: str = USER_AGENT,
        refresh: bool = False,
    ):
        self.cache = Path(cache)
        self.rate = float(rate)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.workers = max(1, int(workers))
        self.user_agent = user_agent
        self.refresh = bool(refresh)
        self.requests = 0
        self._limit = _HostRate(self.rate)
        self._session = None
        self._lock = threading.Lock()

    # --- the session ----------------------------------------------------------------------
    @property
    def session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    import requests
                    from requests.adapters import HTTPAdapter

                    s = requests.Session()
                    adapter = HTTPAdapter(
                        max_retries=_retry(self.retries, self.backoff),
                        pool_connections=self.workers,
                        pool_maxsize=self.workers,
                    )
                    s.mount("http://", adapter)
                    s.mount("https://", adapter)
                    s.headers["User-Agent"] = self.user_agent
                    self._session = s
        return self._session

    def close(self) -> None:
        """Close the connections (the cache stays)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one URL --------------------------------------------------------------------------
    def cached(self, key: str) -> Path | None:
        """The cached file of ``key``, or None."""
        path = cache_file(self.cache, key)
        return path if path.is_file() else None

    def get_bytes(self, url: str) -> tuple[bytes, str]:
        """``(body, content type)`` of ``url`` (no cache); raises :class:`FetchError`."""
        import requests

        if not _HTTP.match(url):
            raise FetchError("only http and https URLs can be fetched", url)
        self._limit.wait(urlsplit(url).netloc.lower())
        with self._lock:
            self.requests += 1
        try:
            r = self.session.get(url, timeout=self.timeout)
        except requests.exceptions.RetryError as e:
            raise FetchError(f"gave up after {self.retries} retries ({_cause(e)})", url) from None
        except requests.exceptions.Timeout:
            raise FetchError(
                f"timed out ({self.timeout:g} s) after {self.retries} retries", url
            ) from None
        except requests.exceptions.ConnectionError as e:
            if "timed out" in _cause(e).lower():  # a read timeout, after the retries
                raise FetchError(
                    f"timed out ({self.timeout:g} s) after {self.retries} retries", url
                ) from None
            raise FetchError(f"cannot connect ({_cause(e)})", url) from None
        except requests.exceptions.RequestException as e:
            raise FetchError(f"request failed ({_cause(e)})", url) from None
        if r.status_code >= 400:
            tried = f" after {self.retries} retries" if r.status_code in RETRY_STATUSES else ""
            raise FetchError(f"HTTP {r.status_code} {r.reason or ''}".rstrip() + tried, url)
        return r.content, r.headers.get("Content-Type", "")

    def fetch(
        self, url: str, key: str | None = None, *, check: Callable[[bytes, str], None] | None = None
    ) -> Path:
        """The cached file of ``url`` (cached under ``key``, default the URL), fetched if the
        cache lacks it (or ``refresh``). ``check(body, content_type)`` may raise
        :class:`FetchError` to refuse a body, which is then not cached."""
        key = key or url
        path = cache_file(self.cache, key)
        if not self.refresh and path.is_file():
            return path
        body, ctype = self.get_bytes(url)
        if check is not None:
            try:
                check(body, ctype)
            except FetchError as e:
                raise FetchError(e.reason, url) from None
        _write_atomic(path, body)
        return path

    def fetch_image(self, url: str, key: str | None = None) -> Path:
        """:meth:`fetch` for a picture: a body that no decoder recognises is refused."""
        return self.fetch(url, key, check=_check_image)

    def get_json(self, url: str) -> Any:
        """The JSON document at ``url``, through the cache (a manifest, an ``info.json``)."""
        path = self.fetch(url, check=_check_json)
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError) as e:  # a cache file damaged since
            path.unlink(missing_ok=True)
            raise FetchError(f"not JSON ({e})", url) from None

    # --- many URLs ------------------------------------------------------------------------
    def fetch_many(
        self, jobs: Iterable[Job], *, images: bool = True
    ) -> Iterator[tuple[Job, Path | None, FetchError | None]]:
        """Fetch ``jobs`` with :attr:`workers` threads (at most twice that many in flight):
        ``(job, file, None)`` or ``(job, None, error)`` each, in the order given."""
        one = self.fetch_image if images else self.fetch

        def run(job: Job) -> tuple[Job, Path | None, FetchError | None]:
            try:
                return job, one(job.url, job.key), None
            except FetchError as e:
                return job, None, e
            except OSError as e:  # the cache's disk
                return job, None, FetchError(f"cannot write the cache ({e})", job.url)

        todo = iter(jobs)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="snoop-fetch") as pool:
            pending = []
            for job in todo:
                pending.append(pool.submit(run, job))
                if len(pending) >= 2 * self.workers:
                    yield pending.pop(0).result()
            for fut in pending:
                yield fut.result()


def _cause(e: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, short."""
    while True:
        inner = getattr(e, "reason", None) or (e.args[0] if e.args else None)
        if isinstance(inner, BaseException) and inner is not e:
            e = inner
            continue
        break
    text = str(e)
    return text if len(text) <= 160 else text[:157] + "..."


def _check_image(body: bytes, ctype: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(body)) as im:
            im.size  # noqa: B018 - the header was parsed
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        kind = ctype.split(";")[0].strip() or "no content type"
        raise FetchError(f"not a picture ({kind}, {len(body)} bytes)") from None


def _check_json(body: bytes, ctype: str) -> None:
    try:
        json.loads(body)
    except ValueError:
        kind = ctype.split(";")[0].strip() or "no content type"
        raise FetchError(f"not JSON ({kind}, {len(body)} bytes)") from None


def _write_atomic(path: Path, body: bytes) -> None:
    """``path`` holds ``body`` whole or not at all (temp file beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
