"""The layout's promises, read from the source (ast), not run: which module may import which.

code/ holds the course's files and the harness package; tools/ the other scripts. Every import arrow
points one way: scripts -> harness -> (course files that use only the low harness modules); the
harness never imports utils.py (the 2019 helpers), a script or the student's file (student.py loads
it by name); student_code.py imports only torch, torchvision and the standard library.
"""
import ast
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE = REPO_ROOT / "code"
HARNESS = CODE / "harness"
TOOLS = REPO_ROOT / "tools"
COURSE_FILES = ("student_code", "main", "test_conv", "custom_dataloader", "custom_transforms", "utils")
# What the course's data files may use of the harness: modules that import nothing but each other.
LOW_HARNESS = {"cli", "files", "images", "labels", "paths", "metrics", "signals"}


PACKAGES = ("harness", "harness.grading")


def top_level_imports(path, package="harness"):
    """The modules `path` (a module of `package`) imports at any depth of its body, as dotted names;
    relative imports of the harness package as 'harness.<name>' ('harness.grading.<name>')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1]) + (f".{node.module}" if node.module else "")
            else:
                base = node.module
            if base in PACKAGES:
                names |= {f"{base}.{alias.name}" for alias in node.names}
            else:
                names.add(base)
    return names


def local_imports(path, package="harness"):
    """Imports of this repository's modules: harness.X, the course files and the tools."""
    tools = {p.stem for p in TOOLS.glob("*.py")}
    return {name for name in top_level_imports(path, package)
            if name.startswith("harness.") or name in COURSE_FILES or name in tools}


def module_graph():
    graph = {f"harness.{p.stem}": local_imports(p) for p in HARNESS.glob("*.py") if p.stem != "__init__"}
    graph.update({f"harness.grading.{p.stem}": local_imports(p, "harness.grading")
                  for p in (HARNESS / "grading").glob("*.py") if p.stem != "__init__"})
    graph.update({name: local_imports(CODE / f"{name}.py") for name in COURSE_FILES})
    return graph


def test_the_tree_shows_the_course():
    assert sorted(p.stem for p in CODE.glob("*.py")) == sorted(COURSE_FILES)
    assert (HARNESS / "__init__.py").is_file()
    assert {"predict", "score", "report", "zip_submission", "download_data", "demo_data"} <= \
        {p.stem for p in TOOLS.glob("*.py")}


def test_no_import_cycle():
    graph = module_graph()
    done, on_path = set(), []

    def visit(name):
        if name in on_path:
            pytest.fail("import cycle: " + " -> ".join(on_path[on_path.index(name):] + [name]))
        if name in done:
            return
        on_path.append(name)
        for dep in graph.get(name, ()):
            visit(dep)
        on_path.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_the_harness_imports_no_script_and_not_utils():
    for name, deps in module_graph().items():
        if name.startswith("harness."):
            assert not deps & {"utils", "main", "test_conv", "student_code"}, name
            assert not {d for d in deps if d in {p.stem for p in TOOLS.glob("*.py")}}, name


def test_the_grader_keeps_the_students_code_in_the_child():
    # Only the child's side imports the seam that loads the student's file; the jail uses the
    # standard library alone (it runs before site-packages are mounted).
    graph = module_graph()
    loaders = {name for name, deps in graph.items() if name.startswith("harness.grading.") and "harness.student" in deps}
    assert loaders == {"harness.grading.child", "harness.grading.probes"}, loaders
    for name in top_level_imports(HARNESS / "grading" / "jail.py", "harness.grading"):
        assert name.split(".")[0] in sys.stdlib_module_names, name


def test_the_graders_docstring_lists_every_module():
    doc = ast.get_docstring(ast.parse((HARNESS / "grading" / "__init__.py").read_text(encoding="utf-8")))
    listed = {line.split()[0] for line in doc.splitlines()[1:] if line.strip()}
    assert {p.stem for p in (HARNESS / "grading").glob("*.py") if p.stem != "__init__"} <= listed


def test_course_files_use_only_the_low_harness_modules():
    graph = module_graph()
    for name in ("custom_dataloader", "custom_transforms", "utils"):
        harness_deps = {d.split(".", 1)[1] for d in graph[name] if d.startswith("harness.")}
        assert harness_deps <= LOW_HARNESS, (name, harness_deps - LOW_HARNESS)
        assert not graph[name] - {f"harness.{m}" for m in LOW_HARNESS}, name


def test_scripts_never_import_scripts():
    tools = {p.stem for p in TOOLS.glob("*.py")}
    for path in [*TOOLS.glob("*.py"), CODE / "main.py", CODE / "test_conv.py"]:
        assert not (local_imports(path) & (tools | {"main", "test_conv"})), path


def test_the_students_file_imports_only_torch_torchvision_and_the_standard_library():
    for name in top_level_imports(CODE / "student_code.py"):
        root = name.split(".")[0]
        assert root in ("torch", "torchvision") or root in sys.stdlib_module_names, name


def part_lines(source, first, second):
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {first}"))
    end = next(i for i, line in enumerate(lines) if line.startswith(f"# {second}"))
    return end - start


def test_the_model_answer_and_main_stay_readable_sizes():
    # The layout issue's bounds: the student's file reads as a model answer (Part I as micrograd's
    # engine reads), main.py only wires flags to harness calls.
    # The solution-region markers of tools/make_starter.py are comments for the staff's tools, not
    # part of the answer a student reads: they are not counted.
    student = "\n".join(line for line in (CODE / "student_code.py").read_text(encoding="utf-8").splitlines()
                        if line.strip() not in ("# BEGIN SOLUTION", "# BEGIN SOLUTION (removed)", "# END SOLUTION"))
    assert len(student.splitlines()) <= 700
    assert part_lines(student, "Part I:", "Part II:") <= 200
    assert len((CODE / "main.py").read_text(encoding="utf-8").splitlines()) <= 450
