"""Independent transcriptions of what the authors' released code does (RRM's tool/myTool.py and
network/RRM.py, PSA's imutils), in their style, written fresh from the facts in
shared/notes/official-code.md. They import nothing from rrm: the oracle tests hold the project to them."""
