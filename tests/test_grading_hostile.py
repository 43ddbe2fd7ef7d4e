"""Hostile submissions graded together with an honest one: each is contained, fails with a line that
says why, and changes nobody else's grade (tools/grade.py's isolation, harness/grading/sandbox.py).

The kinds: reading elsewhere, reaching the network and writing outside its copy, then patching torch
(snoop), an endless loop with processes meant to outlive it (looper), a memory grab (hog), an early
exit (quitter), forged status lines and answers with a pickle payload (forger). Part I's checks only,
with short timeouts and a 768 MB memory cap (an honest child peaks near 400 MB), so the batch takes seconds.
"""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.grading import batch, sandbox

HERE = Path(__file__).resolve().parent
REPO_CODE = HERE.parent / "code"
ISOLATED, WHY = sandbox.isolation_available()
RUBRIC = """
[grader]
memory_mb = 768
budget_s = 60
[checks."Part I: test_conv forward"]
timeout_s = 6
[checks."Part I: held cases, forward"]
timeout_s = 6
[checks."Part I: no built-in convolution"]
timeout_s = 6
"""
SKIPPED = [name for name in ("Part I: test_conv backward", "Part I: test_conv CustomConv2d against nn.Conv2d",
                             "Part I: held cases, gradients", "Part I: held cases, CustomConv2d",
                             "Part I: beyond 2019 (dilation, groups, no bias, rectangular kernels)")]
PART_II_III = ("Part II: default_model builds", "Part II: logits of the right shape", "Part II: weights within 10 MB",
               "Part II: CustomConv2d gives nn.Conv2d's outputs", "Part II: short training lowers the loss",
               "Part III: saliency map shape", "Part III: saliency equals the input gradient",
               "Part III: PGD stays within epsilon", "Part III: PGD stays in the valid image range",
               "Part III: PGD returns a detached tensor", "Part III: PGD leaves the model as it was",
               "Part III: PGD is as strong as the reference", "Challenge: model within 10 MB loads with weights_only",
               "Challenge: predictions follow the devkit's format", "Challenge: top-5 error on held labels",
               "Challenge: the model reproduces its predictions")


def processes_of_grader_users():
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split() and
            sandbox.FIRST_UID <= int(line.split()[0]) < sandbox.FIRST_UID + 100]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    subs = root / "subs"
    subs.mkdir()
    for path in (HERE / "grading_hostile").glob("*.py"):
        (subs / path.name).write_bytes(path.read_bytes())
    others = [str(root / "grades" / ".grader" / "staging" / "honest" / "student_code.py"), str(subs / "honest.py"),
              str(root / "rubric.toml"), str(root / "grades"), str(REPO_CODE / "harness" / "grading" / "rubric.toml")]
    snoop = subs / "snoop.py"
    snoop.write_text(snoop.read_text().replace("OTHERS = []", f"OTHERS = {others!r}"))
    (subs / "honest.py").write_bytes((HERE / "student_2019" / "student_code.py").read_bytes())
    Path("/tmp/SECRET_LABELS.txt").write_text("the staff's labels")
    rubric = root / "rubric.toml"
    rubric.write_text(RUBRIC + "".join(f'[checks."{name}"]\nrun = false\n' for name in (*SKIPPED, *PART_II_III)))
    Path("/tmp/PWNED_BY_A_PICKLE").unlink(missing_ok=True)
    lines = []
    everyone = batch.grade_folder(subs, root / "grades", jobs=2, rubric_path=rubric, say=lines.append)
    yield root, everyone, lines, rubric
    Path("/tmp/SECRET_LABELS.txt").unlink(missing_ok=True)


def outputs(results):
    return {test["name"]: (test["score"], test["output"]) for test in results["tests"]}


def test_an_honest_submission_graded_beside_them_keeps_its_points(graded):
    _, everyone, _, _ = graded
    assert everyone["honest"]["score"] == 5.0, everyone["honest"]
    for name in ("snoop", "looper", "hog", "quitter", "forger"):
        assert everyone[name]["score"] == 0, (name, everyone[name])


@pytest.mark.skipif(not ISOLATED, reason=f"no namespaces here: {WHY}")
def test_it_reads_and_writes_nothing_outside_its_copy_and_has_no_network(graded):
    line = outputs(graded[1]["snoop"])["Part I: test_conv forward"][1]
    assert "SNOOP" in line
    found = json.loads(line[line.index("SNOOP ") + 6:].splitlines()[0])
    assert len(found) == 19  # another student's copy and file, the rubrics and the grades among them
    assert all(str(found[path]).startswith("refused") for path in list(found)[:5]), found
    jail_root = {"bin", "dev", "etc", "inputs", "lib", "lib32", "lib64", "proc", "root", "runtime", "sbin", "tmp",
                 "usr", "work"}
    for path, what in found.items():
        if path in ("/work/out/../..", "/inputs/../.."):  # "/" is the jail's: the system, Python, its own copy
            assert set(what) <= jail_root, what
        elif path == "/root":  # only the Python installation lies under it
            assert what == [".pyenv"] or what == [] or str(what).startswith("refused"), what
        elif path != "/runtime/../tmp":  # its own empty /tmp
            assert str(what).startswith("refused"), (path, what)
    assert "Network is unreachable" in found["('1.1.1.1', 80)"]
    assert not Path("/work/main/PWNED").exists()


def test_patching_torch_in_its_process_changes_no_verdict(graded):
    results = outputs(graded[1]["snoop"])
    assert results["Part I: test_conv forward"][0] == 0
    assert "output differs by up to" in results["Part I: test_conv forward"][1]


def test_an_endless_loop_times_out_and_leaves_no_process(graded):
    results = outputs(graded[1]["looper"])
    assert results["Part I: test_conv forward"][1].startswith("timed out")
    assert not processes_of_grader_users()


@pytest.mark.skipif(not ISOLATED, reason=f"no cgroups here: {WHY}")
def test_a_memory_grab_is_stopped_and_said(graded):
    assert "ran out of memory" in outputs(graded[1]["hog"])["Part I: test_conv forward"][1]


def test_an_early_exit_is_said(graded):
    assert "ended (exit code 3)" in outputs(graded[1]["quitter"])["Part I: test_conv forward"][1]


def test_forged_answers_are_not_unpickled_and_score_nothing(graded):
    results = outputs(graded[1]["forger"])
    assert "could not be read as tensors" in results["Part I: test_conv forward"][1]
    assert not Path("/tmp/PWNED_BY_A_PICKLE").exists()


def test_the_batch_writes_gradescope_results_a_csv_and_a_summary(graded):
    root, everyone, lines, _ = graded
    results = json.loads((root / "grades" / "honest" / "results.json").read_text())
    assert {"score", "execution_time", "output", "tests"} <= set(results)
    rows = list(csv.reader((root / "grades" / "grades.csv").open()))
    assert rows[0][:2] == ["student", "total"] and rows[1][0] == "(maximum)" and len(rows) == 2 + len(everyone)
    summary = (root / "grades" / "summary.md").read_text()
    assert "| Part I: test_conv forward | 1 | 1/6 | 17% |" in summary
    assert "isolation:" in summary and (root / "grades" / "scores.png").is_file()
    assert any(line.startswith("[") and "honest: 5/5" in line for line in lines)


def test_a_second_run_skips_unchanged_submissions_and_only_regrades_one(graded):
    root, _, _, rubric = graded
    lines = []
    batch.grade_folder(root / "subs", root / "grades", rubric_path=rubric, say=lines.append)
    assert lines[0].startswith("6 submissions, 0 to grade (6 unchanged)")
    (root / "subs" / "honest.py").write_text((root / "subs" / "quitter.py").read_text())
    lines = []
    batch.grade_folder(root / "subs", root / "grades", rubric_path=rubric, only=["honest"], say=lines.append)
    assert any("score changed: honest: 5 -> 0 points" in line for line in lines), lines


def test_run_autograder_grades_a_fake_gradescope_tree_without_namespaces(graded, tmp_path):
    rubric = graded[3]
    root = tmp_path / "autograder"
    (root / "submission" / "code").mkdir(parents=True)  # the zip_submission.py layout
    (root / "submission" / "code" / "student_code.py").write_bytes((HERE / "student_2019" / "student_code.py").read_bytes())
    source = tmp_path / "source"
    source.mkdir()
    for name in ("tools", "code", "requirements.txt"):
        (source / name).symlink_to(HERE.parent / name)
    (source / "rubric.toml").write_bytes(rubric.read_bytes())
    # Gradescope's container usually forbids namespaces: the fallback (rlimits, no namespaces) runs here
    env = {"PATH": "/usr/bin:/bin", "AUTOGRADER_ROOT": str(root), "AUTOGRADER_SOURCE": str(source), "HOME": str(tmp_path),
           "GRADER_ISOLATION": "off"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # python3 of this environment
    done = subprocess.run([str(HERE.parent / "tools" / "gradescope" / "run_autograder")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 5.0 and len(results["tests"]) == 3, results
    assert "ran without namespaces: switched off (GRADER_ISOLATION=off)" in results["output"]
    assert subprocess.run(["bash", "-n", str(HERE.parent / "tools" / "gradescope" / "setup.sh")]).returncode == 0
