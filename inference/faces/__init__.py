"""Face restoration as A1111 does it: detect faces (RetinaFace), align each to the FFHQ
template, restore it (GFPGAN or CodeFormer through spandrel), and paste it back with a soft mask.

retinaface.py is the detector, alignment.py the warps and the paste-back, restore.py the
restorers and the job.
"""
