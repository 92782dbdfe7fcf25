# Entry point on the RP2040: copy this file to the board's /main.py (or put
# `import boards.rp2040.main` there when the code is frozen in).
from boards.common.board import main
from boards.rp2040.port import Rp2040Port

main(Rp2040Port())
