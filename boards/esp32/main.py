# Entry point on the ESP32: copy this file to the board's /main.py (or put
# `import boards.esp32.main` there when the code is frozen in).
from boards.common.board import main
from boards.esp32.port import Esp32Port

main(Esp32Port())
