"""Knowledge distillation of MobileStyleGAN students from a MobileStyleGAN or StyleGAN2 teacher (issue 5).

teachers.py (load the teacher), students.py (build/initialise/export students), targets.py (teacher target pool and
online batches), losses.py, augment.py (DiffAugment), trainer.py (the loop, resume, dvclive, torchrun), run.py
(params -> objects, used by the stages).
"""
