"""The staff's harness: everything of Assignment 2 that is not the student's file.

code/main.py, code/test_conv.py and tools/ are thin scripts over these modules; the course's own files
(custom_dataloader.py, custom_transforms.py) use only the low modules (cli, files, images, labels, paths).

    student       the seam: loads code/student_code.py and turns its errors into one line
    cli           user errors, exit codes, argparse that prints one line
    signals       SIGINT, SIGTERM and SIGHUP as one Interrupted exception (exit 128 + N)
    paths         the repository's default folders
    files         atomic writes (text, JSON, figures)
    images        reading any image as upright 8-bit RGB; PNG encoding
    labels        the label and category text files
    metrics       AverageMeter, top-k accuracy
    rng           RNG states and seeding
    flags         checking main.py's flags; the frozen run configuration
    runs          run folders and the resume policy
    loaders       datasets and DataLoaders, batches finished on the device
    models        the --arch registry, building networks, models from checkpoints
    networks      our own network designs (--arch *_bn, *_res, *_half)
    checkpoints   reading and writing checkpoints of every kind
    archives      the one checkpoint inside a zip, tar or compressed file
    engine        the training, validation and attack loops; the learning-rate schedule
    divergence    non-finite losses and weights
    runlog        console, TensorBoard and PNG grids
    devices       GPU, torchrun, mixed precision, memory format, peak memory
    attacks       the adversarial training batch and the robustness report
    training      a training run (main.py without -e/-a)
    evaluation    -e and -a
    demo          --demo
    demo_data     the generated demo dataset
    scoring       top-k error of prediction files (the devkit's evaluation)
    conv_check    what differs between a student's convolution and F.conv2d (test_conv.py)
    selfcheck     a student's file checked end to end (tools/check_student_code.py)
    attack_grid   the picture of an attack: labels and the magnified perturbation
    grading/      the staff's grader of a folder of submissions (tools/grade.py; its own docstring lists its modules)
"""
