from unas_lightning.cli.app import main

main()
