from fexgan.cli.main import main

main()
