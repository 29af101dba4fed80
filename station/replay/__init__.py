"""`station replay`: run recorded or collected frames through the station, safely."""
