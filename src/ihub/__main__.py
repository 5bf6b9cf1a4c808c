from ihub.cli import main

main()
