"""The knowledge base: users, their visual classes, labels, classifier versions, applications.

It lives in the collection's SQLite catalog (WAL mode), so a collection directory carries its
knowledge with it. Every write is its own ``BEGIN IMMEDIATE`` transaction, committed before the
call returns: a label clicked is a label kept, even if the kernel dies the next instant, and two
processes labelling the same collection at once (two dashboard visitors) both keep every label.

Labels are an append-only log: setting a label adds a row, clearing one adds a row of value 0,
and the current label of an item in a class is the latest row. Nothing is ever overwritten, so
the history of a class can always be replayed.

A class its owner shares as *collaborative* (``share(..., collaborative=True)``) is labelled by
several users: each user's current label of an item (their *vote*: that user's latest row for
it) is kept apart from the others', and :meth:`KnowledgeBase.aggregate` weighs the votes by each
user's reliability, estimated from their agreement (:mod:`snoop_nb.learn.aggregate`).

>>> kb = collection.kb                                  # doctest: +SKIP
>>> kb.create_class("alice", "red cars")                # doctest: +SKIP
>>> kb.label("alice", "red cars", [12, 40], +1)         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.learn.aggregate import Aggregate

SOURCES = ("click", "import", "rule")
MAX_NAME = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS classes (
    id          INTEGER PRIMARY KEY,
    owner       INTEGER NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL,
    shared      INTEGER NOT NULL DEFAULT 0 CHECK (shared IN (0, 1)),
    copied_from INTEGER REFERENCES classes(id),
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS labels (
    id       INTEGER PRIMARY KEY,
    class_id INTEGER NOT NULL REFERENCES classes(id),
    item_id  INTEGER NOT NULL,
    user_id  INTEGER NOT NULL REFERENCES users(id),
    value    INTEGER NOT NULL CHECK (value IN (-1, 0, 1)),
    time     REAL NOT NULL,
    source   TEXT NOT NULL CHECK (source IN ('click', 'import', 'rule'))
);
CREATE INDEX IF NOT EXISTS labels_class_item ON labels(class_id, item_id, id);
CREATE TABLE IF NOT EXISTS models (
    id        INTEGER PRIMARY KEY,
    class_id  INTEGER NOT NULL REFERENCES classes(id),
    time      REAL NOT NULL,
    n_pos     INTEGER NOT NULL,
    n_neg     INTEGER NOT NULL,
    params    TEXT NOT NULL,     -- JSON: estimator, hyper-parameters, pseudo-negatives...
    weights   BLOB NOT NULL,     -- float32 coefficients, one per vector dimension
    bias      REAL NOT NULL,
    quality   TEXT NOT NULL      -- JSON: cross-validated estimates
);
CREATE INDEX IF NOT EXISTS models_class ON models(class_id, id);
-- classes their owner opened to every user's labels (collaborative); a table of its own, so
-- that catalogs written before it need no migration
CREATE TABLE IF NOT EXISTS collaborative_classes (
    class_id INTEGER PRIMARY KEY REFERENCES classes(id),
    time     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    class_id INTEGER NOT NULL REFERENCES classes(id),
    item_id  INTEGER NOT NULL,
    score    REAL NOT NULL,
    model_id INTEGER NOT NULL REFERENCES models(id),
    time     REAL NOT NULL,
    PRIMARY KEY (class_id, item_id)
);
"""


@dataclass(frozen=True)
class ClassRef:
    """A visual class: its id, owner's name, name, description and sharing state
    (``collaborative``: shared, and every user may label it)."""

    id: int
    owner: str
    name: str
    description: str
    shared: bool
    created: float
    copied_from: int | None = None
    collaborative: bool = False

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class ModelRecord:
    """One trained classifier version of a class."""

    id: int
    class_id: int
    time: float
    n_pos: int
    n_neg: int
    params: dict[str, Any]
    weights: np.ndarray
    bias: float
    quality: dict[str, Any]


# Characters a name may not hold: controls (Cc), invisible format characters (Cf: zero-width
# spaces and joiners, bidirectional overrides and isolates, soft hyphens), line and paragraph
# separators, surrogates. With them two different names can look the same, or a name can
# reorder the text printed around it.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_ZWJ = "\u200d"


def check_name(kind: str, name: str, *, new: bool = True) -> str:
    """A user or class name, normalised (NFC, outer spaces trimmed).

    Refuses empty names, overlong ones and, when ``new``, control, invisible and
    direction-changing characters, naming the first one's code point. A zero-width joiner
    inside an emoji sequence (e.g. a family emoji) is kept: it joins visible pictures.
    Lookups (``new=False``) check only the type, emptiness and length, so that a class
    created before this rule can still be read.
    """
    if not isinstance(name, str):
        raise UsageError(f"{kind} name must be text, not {type(name).__name__}")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise UsageError(f"{kind} name is empty")
    if len(name) > MAX_NAME:
        raise UsageError(f"{kind} name is longer than {MAX_NAME} characters")
    bad = _first_refused(name) if new else None
    if bad is not None:
        code = f"U+{ord(bad):04X}"
        what = unicodedata.name(bad, "")
        what = f" ({what})" if what else ""
        kind_of = (
            "a control"
            if unicodedata.category(bad) == "Cc"
            else "an invisible or direction-changing"
        )
        raise UsageError(
            f"{kind} name {name!r} contains {kind_of} character {code}{what}: remove it, "
            "so that no two names can look alike"
        )
    return name


def _first_refused(name: str) -> str | None:
    """The first character of ``name`` that names may not hold, or None."""
    for i, c in enumerate(name):
        if unicodedata.category(c) not in _REFUSED_CATEGORIES:
            continue
        if c == _ZWJ and 0 < i < len(name) - 1 and _joins_emoji(name[i - 1], name[i + 1]):
            continue
        return c
    return None


def _joins_emoji(before: str, after: str) -> bool:
    """Whether a zero-width joiner between ``before`` and ``after`` builds an emoji sequence:
    a picture (So), skin tone (Sk) or emoji presentation selector before it, a picture after."""
    return (unicodedata.category(before) in ("So", "Sk") or before == "\ufe0f") and (
        unicodedata.category(after) == "So"
    )


def _no_slash(kind: str, name: str) -> None:
    """New names may not hold "/": it separates owner and class in ``"owner/name"``."""
    if "/" in name:
        raise UsageError(
            f"{kind} name {name!r} contains '/', which separates owner and class in "
            "'owner/name': choose another name"
        )


class KnowledgeBase:
    """Users, classes, labels, models and applied classes of one collection.

    Open it through :attr:`snoop_nb.collection.Collection.kb`; it keeps its own connection to the
    catalog, in autocommit mode, with explicit write transactions.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so writers queue, not fail."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # --- users --------------------------------------------------------------------------
    def user_id(self, name: str, *, create: bool = True) -> int:
        """The id of user ``name``, created on first use (``create=False``: an unknown user is
        a :class:`UsageError` that lists the users there are)."""
        name = check_name("user", name, new=False)
        row = self._db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        if row:
            return int(row[0])
        if not create:
            raise UsageError(self._no_user_message(name))
        name = check_name("user", name)
        _no_slash("user", name)
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO users (name, created) VALUES (?, ?)", (name, time.time())
            )
            (uid,) = db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        return int(uid)

    def users(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM users ORDER BY name")]

    def has_user(self, name: str) -> bool:
        """Whether user ``name`` exists (never creates one)."""
        name = check_name("user", name, new=False)
        return (
            self._db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None
        )

    def _no_user_message(self, name: str, *, shared: bool = False) -> str:
        """Says that there is no user ``name``; lists the users (and the shared classes)."""
        users = self.users()
        known = f"users: {_listing([repr(u) for u in users])}" if users else "no users yet"
        names = [repr(str(c)) for c in self.classes(None) if c.shared] if shared else []
        if names:
            known += f"; shared classes: {_listing(names)}"
        return f"no user named {name!r} in this collection ({known})"

    # --- classes ------------------------------------------------------------------------
    def create_class(
        self, user: str, name: str, description: str = "", *, exist_ok: bool = True
    ) -> ClassRef:
        """Create ``user``'s class ``name`` (or return it when it exists and ``exist_ok``)."""
        user = check_name("user", user, new=False)
        existing = self._find_class(user, check_name("class", name, new=False))
        if existing is not None:
            if not exist_ok:
                raise UsageError(f"{existing.owner} already has a class named {existing.name!r}")
            return existing
        name = check_name("class", name)
        if "/" in name:
            try:
                other = self.get_class(user, name)
            except UsageError:
                other = None
            if other is not None and other.owner != user and other.collaborative and exist_ok:
                return other  # open to contributions: labelled as it is, not copied
            if other is not None and other.owner != user:
                raise UsageError(
                    f"{other} is {other.owner}'s shared class: copy it into your own classes "
                    f"to label it (kb.copy_class({user!r}, {name!r}))"
                )
            _no_slash("class", name)
        uid = self.user_id(user)  # checked and named before anything is written
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO classes (owner, name, description, created) "
                "VALUES (?, ?, ?, ?)",
                (uid, name, description or "", time.time()),
            )
            created = cur.rowcount == 1
        if not created and not exist_ok:
            raise UsageError(f"{user} already has a class named {name!r}")
        return self.get_class(user, name)

    def get_class(self, user: str, name: str) -> ClassRef:
        """``user``'s own class ``name``, or a class shared as ``"owner/name"``.

        Never creates anything. An unknown class (or user) is a :class:`UsageError` whose
        message lists the names ``user`` can use instead.
        """
        user = check_name("user", user, new=False)
        name = check_name("class", name, new=False)
        ref = self._find_class(user, name)
        if ref is None and "/" in name:
            owner, _, cname = name.partition("/")
            shared = self._find_class(owner.strip(), cname.strip())
            if shared is not None and (shared.shared or shared.owner == user):
                return shared
        if ref is None:
            raise UsageError(self._no_class_message(user, name))
        return ref

    def _no_class_message(self, user: str, name: str) -> str:
        """Says that ``user`` has no class ``name``, and lists the names they can use."""
        if not self.has_user(user):
            return self._no_user_message(user, shared=True)
        names = [c.name if c.owner == user else str(c) for c in self.classes(user)]
        listed = (
            f"use one of {_listing([repr(n) for n in names])}"
            if names
            else "there are no classes of theirs and none shared"
        )
        return f"{user} has no class named {name!r} ({listed})"

    def _find_class(self, owner: str, name: str) -> ClassRef | None:
        row = self._db.execute(
            _CLASS_COLUMNS
            + "FROM classes c JOIN users u ON u.id = c.owner WHERE u.name = ? AND c.name = ?",
            (owner, name),
        ).fetchone()
        return _class_ref(row) if row else None

    def class_by_id(self, class_id: int) -> ClassRef:
        """The class of id ``class_id`` as it is now (e.g. after its owner shared it)."""
        row = self._db.execute(
            _CLASS_COLUMNS + "FROM classes c JOIN users u ON u.id = c.owner WHERE c.id = ?",
            (int(class_id),),
        ).fetchone()
        if row is None:
            raise UsageError(f"no class with id {class_id}")
        return _class_ref(row)

    def classes(self, user: str | None = None, *, shared: bool = True) -> list[ClassRef]:
        """``user``'s classes (and, with ``shared``, the classes others share); all if no user."""
        sql = _CLASS_COLUMNS + "FROM classes c JOIN users u ON u.id = c.owner"
        if user is None:
            rows = self._db.execute(sql + " ORDER BY u.name, c.name").fetchall()
        else:
            user = check_name("user", user, new=False)
            cond = "u.name = ?" + (" OR c.shared = 1" if shared else "")
            rows = self._db.execute(
                sql + f" WHERE {cond} ORDER BY u.name != ?, u.name, c.name", (user, user)
            ).fetchall()
        return [_class_ref(r) for r in rows]

    def share(
        self, user: str, name: str, shared: bool = True, *, collaborative: bool | None = None
    ) -> ClassRef:
        """Share ``user``'s class read-only with everyone (or stop sharing it).

        ``collaborative=True`` shares it open to every user's labels: each contributor's votes
        are kept apart and aggregated (:meth:`aggregate`); ``False`` makes it read-only again,
        keeping every vote given. ``None`` leaves that as it is. Renaming, sharing, applying
        and deleting stay the owner's.

        >>> kb.share("alice", "boats", collaborative=True)       # doctest: +SKIP
        >>> kb.label("bob", "alice/boats", [4], +1)              # bob's vote  # doctest: +SKIP
        """
        ref = self._own(user, name)
        with self._write() as db:
            db.execute("UPDATE classes SET shared = ? WHERE id = ?", (int(shared), ref.id))
            if collaborative:
                db.execute(
                    "INSERT OR IGNORE INTO collaborative_classes (class_id, time) VALUES (?, ?)",
                    (ref.id, time.time()),
                )
            elif collaborative is not None:
                db.execute("DELETE FROM collaborative_classes WHERE class_id = ?", (ref.id,))
        return self.get_class(user, ref.name)

    def copy_class(self, user: str, source: str, new_name: str | None = None) -> ClassRef:
        """Copy a class shared as ``"owner/name"`` into ``user``'s own classes, labels included.

        The copy's labels are ``user``'s, with source ``import`` (of a collaborative class: the
        latest vote given of each item, see :meth:`labels`); the original is untouched.
        """
        src = self.get_class(user, source)
        if src.owner != user and not src.shared:
            raise UsageError(f"{source} is not shared")
        uid = self.user_id(user)
        name = check_name("class", new_name or src.name)
        _no_slash("class", name)
        with self._write() as db:
            try:
                cur = db.execute(
                    "INSERT INTO classes (owner, name, description, created, copied_from) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (uid, name, src.description, time.time(), src.id),
                )
            except sqlite3.IntegrityError:
                raise UsageError(f"{user} already has a class named {name!r}") from None
            new_id = cur.lastrowid
            now = time.time()
            current = self.labels(src)  # read inside the transaction: no vote slips between
            db.executemany(
                "INSERT INTO labels (class_id, item_id, user_id, value, time, source) "
                "VALUES (?, ?, ?, ?, ?, 'import')",
                [
                    (new_id, int(i), uid, int(v), now)
                    for i, v in zip(current["item_id"], current["value"], strict=True)
                ],
            )
        return self.get_class(user, name)

    def summaries(self, user: str | None = None) -> list[dict[str, Any]]:
        """What ``snoop classes`` shows: ``user``'s classes and the shared ones (all classes
        when no user), each with its label counts, model versions and latest quality.

        Keys: ``class`` (the name ``user`` passes to reach it: their own by name, others' as
        ``owner/name``), owner, name, description, shared, copied_from (``owner/name`` or
        None), relevant, not_relevant, models, latest_model (id, time, n_pos, n_neg,
        quality; None before training) and applied (items the class is applied to);
        collaborative (open to every user's labels) and voters (users with a current vote).
        Never creates anything: an unknown user is a :class:`UsageError` naming the users.
        """
        if user is not None:
            user = check_name("user", user, new=False)
            if not self.has_user(user):
                raise UsageError(self._no_user_message(user, shared=True))
        db = self._db
        out = []
        for ref in self.classes(user):
            votes = self.votes(ref)
            counts = self.labels(ref)["value"].value_counts().to_dict() if len(votes) else {}
            (n_models,) = db.execute(
                "SELECT count(*) FROM models WHERE class_id = ?", (ref.id,)
            ).fetchone()
            latest = db.execute(
                "SELECT id, time, n_pos, n_neg, quality FROM models WHERE class_id = ? "
                "ORDER BY id DESC LIMIT 1",
                (ref.id,),
            ).fetchone()
            (n_applied,) = db.execute(
                "SELECT count(*) FROM applied WHERE class_id = ?", (ref.id,)
            ).fetchone()
            source = None
            if ref.copied_from is not None:
                row = db.execute(
                    "SELECT u.name, c.name FROM classes c JOIN users u ON u.id = c.owner "
                    "WHERE c.id = ?",
                    (ref.copied_from,),
                ).fetchone()
                source = f"{row[0]}/{row[1]}" if row else None
            out.append(
                {
                    "class": ref.name if ref.owner == user else str(ref),
                    "owner": ref.owner,
                    "name": ref.name,
                    "description": ref.description,
                    "shared": ref.shared,
                    "collaborative": ref.collaborative,
                    "voters": int(votes["user"].nunique()),
                    "copied_from": source,
                    "relevant": int(counts.get(1, 0)),
                    "not_relevant": int(counts.get(-1, 0)),
                    "models": int(n_models),
                    "latest_model": None
                    if latest is None
                    else {
                        "id": int(latest[0]),
                        "time": float(latest[1]),
                        "n_pos": int(latest[2]),
                        "n_neg": int(latest[3]),
                        "quality": json.loads(latest[4]),
                    },
                    "applied": int(n_applied),
                }
            )
        return out

    def _labellable(self, user: str, name: str) -> ClassRef:
        """``user``'s own class ``name``, or a collaborative class shared as ``owner/name``."""
        ref = self.get_class(user, name)
        if ref.owner != check_name("user", user, new=False) and not ref.collaborative:
            raise UsageError(
                f"{ref} belongs to {ref.owner}: copy it to change it (or ask {ref.owner} to "
                "open it to contributions: kb.share(..., collaborative=True))"
            )
        return ref

    def _own(self, user: str, name: str) -> ClassRef:
        ref = self.get_class(user, name)
        if ref.owner != check_name("user", user, new=False):
            raise UsageError(f"{ref} belongs to {ref.owner}: copy it to change it")
        return ref

    # --- labels -------------------------------------------------------------------------
    def label(
        self,
        user: str,
        class_name: str,
        item_ids: Iterable[int] | int,
        value: int,
        *,
        source: str = "click",
    ) -> int:
        """Set the label of items in ``user``'s class: +1 relevant, -1 not, 0 cleared.

        ``class_name`` may also be a collaborative class another user shares
        (``"owner/name"``): the rows are then ``user``'s votes, kept apart from the others'.
        Committed before returning. Returns the number of label rows written.
        """
        if value not in (-1, 0, 1):
            raise UsageError(f"a label is +1, -1 or 0, not {value!r}")
        if source not in SOURCES:
            raise UsageError(f"label source must be one of {', '.join(SOURCES)}")
        ids = (
            [int(item_ids)]
            if isinstance(item_ids, (int, np.integer))
            else [int(i) for i in item_ids]
        )
        ref = self._labellable(user, class_name)
        uid = self.user_id(user)
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT INTO labels (class_id, item_id, user_id, value, time, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(ref.id, i, uid, int(value), now, source) for i in ids],
            )
        return len(ids)

    def labels(self, ref: ClassRef, user: str | None = None) -> pd.DataFrame:
        """Current labels of a class: item_id, value (+1/-1), time, source, user.

        A class labelled by one user: that user's latest row per item (0 = cleared, left
        out). By several (collaborative): the latest vote given of each item (see
        :meth:`votes`; :meth:`aggregate` weighs them instead). ``user``: that user's own votes.
        """
        votes = self.votes(ref, user)
        if user is None:  # the latest vote given of each item
            votes = votes.sort_values("row", kind="stable").drop_duplicates("item_id", keep="last")
        return votes.sort_values("item_id", kind="stable").reset_index(drop=True)[
            ["item_id", "value", "time", "source", "user"]
        ]

    def votes(self, ref: ClassRef, user: str | None = None) -> pd.DataFrame:
        """Each user's current label of each item of a class (their latest row, cleared ones
        left out): item_id, user, value (+1/-1), time, source, row (the label log's id).

        Only a collaborative class has several users' votes; ``user``: only theirs.
        """
        import pandas as pd

        sql = (
            "SELECT l.item_id, u.name AS user, l.value, l.time, l.source, l.id AS row "
            "FROM labels l JOIN users u ON u.id = l.user_id WHERE l.class_id = ? AND l.id = ("
            "SELECT max(id) FROM labels WHERE class_id = l.class_id AND item_id = l.item_id "
            "AND user_id = l.user_id) AND l.value != 0"
        )
        params: tuple = (ref.id,)
        if user is not None:
            sql += " AND u.name = ?"
            params += (check_name("user", user, new=False),)
        return pd.read_sql_query(sql + " ORDER BY l.item_id, u.name", self._db, params=params)

    def voters(self, ref: ClassRef) -> list[str]:
        """The users with a current vote in a class, by name."""
        return sorted(set(self.votes(ref)["user"]))

    def aggregate(self, ref: ClassRef, method: str = "dawid-skene") -> Aggregate:
        """The votes of a class aggregated into one label per item, each user weighed by a
        reliability estimated from agreement (``"dawid-skene"``), or one vote each
        (``"majority"``); see :func:`snoop_nb.learn.aggregate.aggregate`.

        >>> agg = kb.aggregate(ref)                   # doctest: +SKIP
        >>> agg.items.head()      # item_id, label, probability, votes, positive, agreement
        >>> agg.users             # user, labels, sensitivity, specificity, reliability
        """
        from snoop_nb.learn.aggregate import aggregate

        return aggregate(self.votes(ref), method)

    def reliability(self, ref: ClassRef, method: str = "dawid-skene") -> pd.DataFrame:
        """Each voter's estimated reliability in a class, most reliable first: user, labels
        (how many it rests on), positive, sensitivity, specificity, reliability (their mean)."""
        return self.aggregate(ref, method).users

    def disagreements(self, ref: ClassRef, method: str = "dawid-skene") -> pd.DataFrame:
        """Items whose voters disagree, least agreed first: item_id, label (the aggregate),
        probability, votes, agreement, and ``by_user`` (``{user: +1 or -1}``)."""
        return self.aggregate(ref, method).disagreements()

    def label_history(self, ref: ClassRef) -> pd.DataFrame:
        """Every label row of a class, oldest first (value 0 = cleared)."""
        import pandas as pd

        return pd.read_sql_query(
            "SELECT l.id, l.item_id, l.value, l.time, l.source, u.name AS user FROM labels l "
            "JOIN users u ON u.id = l.user_id WHERE l.class_id = ? ORDER BY l.id",
            self._db,
            params=(ref.id,),
        )

    # --- models -------------------------------------------------------------------------
    def save_model(
        self,
        ref: ClassRef,
        *,
        weights: np.ndarray,
        bias: float,
        n_pos: int,
        n_neg: int,
        params: dict[str, Any],
        quality: dict[str, Any],
    ) -> ModelRecord:
        """Store a trained classifier version; returns it with its id."""
        w = np.ascontiguousarray(weights, dtype=np.float32).reshape(-1)
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO models (class_id, time, n_pos, n_neg, params, weights, bias, quality) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref.id,
                    time.time(),
                    int(n_pos),
                    int(n_neg),
                    json.dumps(params),
                    w.tobytes(),
                    float(bias),
                    json.dumps(quality),
                ),
            )
        return self.model(int(cur.lastrowid))

    def model(self, model_id: int) -> ModelRecord:
        row = self._db.execute(
            "SELECT id, class_id, time, n_pos, n_neg, params, weights, bias, quality "
            "FROM models WHERE id = ?",
            (model_id,),
        ).fetchone()
        if row is None:
            raise UsageError(f"no model with id {model_id}")
        return _model_record(row)

    def latest_model(self, ref: ClassRef) -> ModelRecord | None:
        row = self._db.execute(
            "SELECT id, class_id, time, n_pos, n_neg, params, weights, bias, quality "
            "FROM models WHERE class_id = ? ORDER BY id DESC LIMIT 1",
            (ref.id,),
        ).fetchone()
        return _model_record(row) if row else None

    def models(self, ref: ClassRef) -> pd.DataFrame:
        """The model history of a class: id, time, counts, quality estimates."""
        import pandas as pd

        rows = self._db.execute(
            "SELECT id, time, n_pos, n_neg, quality FROM models WHERE class_id = ? ORDER BY id",
            (ref.id,),
        ).fetchall()
        records = [
            {"model_id": r[0], "time": r[1], "n_pos": r[2], "n_neg": r[3], **json.loads(r[4])}
            for r in rows
        ]
        return pd.DataFrame(records)

    # --- applying a class to the corpus -------------------------------------------------
    def set_applied(
        self, ref: ClassRef, item_ids: np.ndarray, scores: np.ndarray, model_id: int
    ) -> int:
        """Replace the items a class is applied to (one transaction)."""
        now = time.time()
        with self._write() as db:
            db.execute("DELETE FROM applied WHERE class_id = ?", (ref.id,))
            db.executemany(
                "INSERT INTO applied (class_id, item_id, score, model_id, time) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (ref.id, int(i), float(s), int(model_id), now)
                    for i, s in zip(item_ids, scores, strict=True)
                ],
            )
        return len(item_ids)

    def applied(self, ref: ClassRef) -> pd.DataFrame:
        """Items a class was applied to: item_id, score, model_id, time."""
        import pandas as pd

        return pd.read_sql_query(
            "SELECT item_id, score, model_id, time FROM applied WHERE class_id = ? "
            "ORDER BY score DESC",
            self._db,
            params=(ref.id,),
        )


def _listing(names: list[str], most: int = 20) -> str:
    """``names`` joined by commas, the first ``most`` of them and how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


_CLASS_COLUMNS = (
    "SELECT c.id, u.name, c.name, c.description, c.shared, c.created, c.copied_from, "
    "EXISTS (SELECT 1 FROM collaborative_classes o WHERE o.class_id = c.id) "
)


def _class_ref(row: tuple) -> ClassRef:
    return ClassRef(
        id=int(row[0]),
        owner=row[1],
        name=row[2],
        description=row[3],
        shared=bool(row[4]),
        created=float(row[5]),
        copied_from=row[6],
        collaborative=bool(row[7]) and bool(row[4]),
    )


def _model_record(row: tuple) -> ModelRecord:
    return ModelRecord(
        id=int(row[0]),
        class_id=int(row[1]),
        time=float(row[2]),
        n_pos=int(row[3]),
        n_neg=int(row[4]),
        params=json.loads(row[5]),
        weights=np.frombuffer(row[6], dtype=np.float32).copy(),
        bias=float(row[7]),
        quality=json.loads(row[8]),
    )
