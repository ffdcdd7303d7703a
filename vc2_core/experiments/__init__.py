"""Experiments on the embedded synthetic world, above the library (which never imports them).

    world.py         the world: low-quality videos of captioned motions, high-quality images, ground truth
    metrics.py       metrics on videos of the world; plots.py, PNG charts
    runs.py          runs on the world: its model config, data files, stage configs, sampling, run logs
    stage0.py        the stand-ins for the pretrained VAE and text encoder
    presets.py       the demo's and the study's presets, prompts and the study's variants
    scoring.py       a video against its prompt: every metric, which way each is better
    demo.py          ``vc2 demo`` (demo_report.py: its targets and report)
    study.py         ``vc2 study coupling`` (study_analysis.py: statistics; study_report.py: report)
"""
