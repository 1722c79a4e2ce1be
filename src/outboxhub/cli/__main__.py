from outboxhub.cli.app import main

main()
