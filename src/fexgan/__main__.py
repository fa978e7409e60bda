from fexgan.cli import main

main()
