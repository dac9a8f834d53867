from envrepro.cli import main

main()
