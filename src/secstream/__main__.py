from secstream.cli import main

main()
