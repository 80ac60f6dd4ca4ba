"""Knowledge distillation of MobileStyleGAN students from a MobileStyleGAN or StyleGAN2 teacher (issue 5).

teachers.py (load the teacher), students.py (build/initialise/export students), targets.py (teacher target pool and
online batches, the teacher renderer and its parity record), losses.py, augment.py (DiffAugment), trainer.py (the
loop, resume, dvclive, torchrun; `TrainConfig.from_params`), report.py (the stage's outputs). The stages'
orchestration is `pipeline.distill`.
"""
