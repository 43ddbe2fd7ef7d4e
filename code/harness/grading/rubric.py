"""The rubric: points, timeouts and which checks run, from TOML (the standard library's tomllib).

The default rubric (grading/rubric.toml) lists every check; a staff rubric given with --rubric is laid
over it table by table, so it may name only what it changes. A check the grader does not know, or a
value of the wrong type, is a one-line UserError.
"""
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..cli import UserError
from . import checks

DEFAULT = Path(__file__).resolve().with_name("rubric.toml")
GRADER_KEYS = {"budget_s": (int, float), "memory_mb": int, "threads": int, "processes": int, "stdout_kb": int,
               "visibility": str}
CHECK_KEYS = {"points": (int, float), "timeout_s": (int, float), "run": bool}
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")


@dataclass(frozen=True)
class Item:
    name: str
    points: float
    timeout_s: float


@dataclass(frozen=True)
class Rubric:
    items: tuple  # the checks that run, in the grader's order
    grader: dict
    text: str  # what the rubric files said, for the grader's version hash

    def item(self, name):
        return next(item for item in self.items if item.name == name)

    @property
    def max_score(self):
        return sum(item.points for item in self.items)


def _read(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
        return tomllib.loads(text), text
    except OSError as exc:
        raise UserError(f"{path}: cannot read the rubric ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not a TOML rubric ({exc})") from None


def load(path=None):
    """The Rubric of the default file, with `path`'s tables laid over it."""
    base, text = _read(DEFAULT)
    where = DEFAULT
    if path is not None:
        extra, extra_text = _read(path)
        where, text = path, text + extra_text
        unknown = set(extra) - {"grader", "checks"}
        if unknown:
            raise UserError(f"{path}: unknown table {sorted(unknown)[0]!r} (the rubric has [grader] and [checks.NAME])")
        base["grader"].update(extra.get("grader", {}))
        for name, values in extra.get("checks", {}).items():
            if name not in checks.BY_NAME:
                raise UserError(f"{path}: no check is called {name!r}; the checks: {', '.join(checks.BY_NAME)}")
            base["checks"].setdefault(name, {}).update(values)
    for key, value in base["grader"].items():
        if key not in GRADER_KEYS or not isinstance(value, GRADER_KEYS[key]) or isinstance(value, bool):
            raise UserError(f"{where}: [grader] {key} = {value!r} is not valid (keys: {', '.join(GRADER_KEYS)})")
    if base["grader"]["visibility"] not in VISIBILITIES:
        raise UserError(f"{where}: visibility must be one of {', '.join(VISIBILITIES)}")
    items = []
    for check in checks.CHECKS:
        values = base["checks"].get(check.name, {})
        for key, value in values.items():
            if key not in CHECK_KEYS or not isinstance(value, CHECK_KEYS[key]) or \
                    (key != "run" and (isinstance(value, bool) or value < 0)):
                raise UserError(f"{where}: [checks.{check.name!r}] {key} = {value!r} is not valid "
                                f"(keys: points, timeout_s, run)")
        if values.get("run", True):
            items.append(Item(check.name, float(values.get("points", 0)), float(values.get("timeout_s", 60))))
    return Rubric(tuple(items), base["grader"], text)
