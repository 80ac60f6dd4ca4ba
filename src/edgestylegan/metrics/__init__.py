"""Evaluation: named feature spaces (torch-fidelity registry), FD/KID/precision-recall, paired PSNR/SSIM."""
