from idx.cli import main

main()
