from tasklift.cli import main

main()
