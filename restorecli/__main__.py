from restorecli.cli import main

main()
