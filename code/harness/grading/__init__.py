"""The staff's grader (tools/grade.py): a folder of submissions in; scores, feedback and a class summary out.

    batch         a folder graded: what to (re)grade, slots, progress, then grades.csv and summary.md
    submissions   the entries of the folder (NAME/, NAME.zip, NAME.py) staged, and their hashes
    rubric        points, timeouts and which checks run (rubric.toml, tomllib)
    context       a grading run's inputs, runtime, the grader's answers and the reference's results
    grader        one submission: its probes run, each check's verdict, results.json's dict
    runner        a submission's probes in the sandbox: working copy, timeouts, restarts, reading answers
    sandbox       a child process in namespaces, as its own user, with cgroups, rlimits and a timer
    jail          process 1 of the namespaces: builds the file system and drops root (stdlib only)
    child         the child's side: imports the student's file, runs the probes, writes plain data
    probes        what the child computes with the student's code, probe by probe
    checks        the checks: names, points' verdicts computed in the grader's process
    handin        the challenge hand-in (results/) read in the grader's process: size, format, errors
    conv_cases    Part I's held cases and F.conv2d's answers with their tolerances
    refnet        the network Part III explains and attacks, trained once and cached
    data          the fixed image slices the checks use
    report        results.json, grades.csv, summary.md and the histogram
    similarity    similar pairs of submissions after removing the starter's lines
    gradescope    the same checks on Gradescope: /autograder/submission in, results/results.json out
    starter       the students' starter made from our solution's marked regions (tools/make_starter.py)
"""
